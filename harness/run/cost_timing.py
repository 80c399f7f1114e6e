"""The measuring instruments of the cost stage: timed calls with excluded warm-up, distribution-free quantile
intervals, the CPU's peak-RSS rise, and the environment every cost record carries.

Quantile interval (docs/metrics.md, "Cost rows"): for k i.i.d. timings with order statistics x_(1) ≤ … ≤ x_(k),
the number B of timings at or below the true q-quantile is Binomial(k, q), so
P(x_(l) ≤ ξ_q ≤ x_(u)) = P(l ≤ B ≤ u − 1) for any continuous distribution. We start from the point estimate
x_(j), j = ⌈qk⌉, and widen [l, u] one order statistic at a time (the side adding more probability) until that
exact binomial coverage reaches 95 %: the interval contains its value by construction and assumes nothing about
the timing distribution. With too few calls no such interval exists (p95 needs k ≥ 59); the bounds are then
None, never a shorter interval with less coverage.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scipy.stats import binom

CONFIDENCE = 0.95


@dataclass(frozen=True)
class QuantileEstimate:
    value: float
    low: float | None  # None when k calls cannot give a CONFIDENCE interval for this quantile
    high: float | None
    coverage: float  # the exact binomial coverage of [low, high] (the best reachable one when low is None)
    ranks: tuple[int, int]  # 1-based order statistics (l, u) of the interval


def quantile_interval(samples: list[float], q: float, confidence: float = CONFIDENCE) -> QuantileEstimate:
    """The q-quantile x_(⌈qk⌉) of ``samples`` with its order-statistic interval (module docstring)."""
    if not 0 < q < 1:
        raise ValueError(f"quantile q={q} must be in (0, 1)")
    xs = sorted(float(s) for s in samples)
    k = len(xs)
    if k == 0:
        raise ValueError("no samples")
    j = max(1, math.ceil(q * k))
    low, high = j, j

    def coverage(lo: int, hi: int) -> float:  # P(lo <= B <= hi - 1), B ~ Binomial(k, q)
        return float(binom.cdf(hi - 1, k, q) - binom.cdf(lo - 1, k, q))

    while coverage(low, high) < confidence and (low > 1 or high < k):
        gain_low = float(binom.pmf(low - 1, k, q)) if low > 1 else -1.0
        gain_high = float(binom.pmf(high, k, q)) if high < k else -1.0
        if gain_low >= gain_high:
            low -= 1
        else:
            high += 1
    reached = coverage(low, high)
    if reached < confidence:
        return QuantileEstimate(xs[j - 1], None, None, reached, (low, high))
    return QuantileEstimate(xs[j - 1], xs[low - 1], xs[high - 1], reached, (low, high))


def min_calls(q: float, confidence: float = CONFIDENCE) -> int:
    """The fewest timed calls for which the q-quantile has a ``confidence`` interval."""
    k = 1
    while quantile_interval([float(i) for i in range(k)], q, confidence).low is None:
        k += 1
    return k


def timed_calls(call: Callable[[], Any], warmup: int, k: int, sync: Callable[[], None] = lambda: None,
                clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Run ``call`` ``warmup`` times untimed, then ``k`` times, each timed alone (``sync`` before reading the
    clock on both sides: CUDA kernels are asynchronous). Returns the k durations in seconds."""
    return interleaved_calls({0: call}, warmup, k, sync, clock)[0]


def interleaved_calls(calls: dict[Any, Callable[[], Any]], warmup: int, k: int,
                      sync: Callable[[], None] = lambda: None,
                      clock: Callable[[], float] = time.perf_counter) -> dict[Any, list[float]]:
    """:func:`timed_calls` of several calls at once: each warmed up ``warmup`` times, then ``k`` rounds in which
    every call runs once, timed alone. Returns each call's k durations in seconds, in round order."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    sync()
    out: dict[Any, list[float]] = {key: [] for key in calls}
    for _ in range(k):
        for key, call in calls.items():
            start = clock()
            call()
            sync()
            out[key].append(clock() - start)
    return out


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakRss:
    """The rise of this process's resident memory over a block, sampled every millisecond by a thread
    (``/proc/self/statm``); where /proc is absent, the rise of ``ru_maxrss`` (a lower bound: it moves only
    past the process's earlier peak). ``kind`` says which was measured."""

    def __enter__(self) -> PeakRss:
        self._base = _rss_bytes()
        self.kind = "cpu_rss_rise" if self._base is not None else "cpu_maxrss_rise"
        self._peak = self._base or 0
        self._max_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        if self._base is not None:
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.001):
            now = _rss_bytes()
            if now is not None and now > self._peak:
                self._peak = now

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._base is not None:
            self._thread.join()
            now = _rss_bytes()
            self._peak = max(self._peak, now or 0)
            self.bytes = self._peak - self._base
        else:  # ru_maxrss is in KiB on Linux, bytes on macOS
            scale = 1 if sys.platform == "darwin" else 1024
            self.bytes = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._max_before) * scale


def environment(device: str) -> dict[str, Any]:
    """What a cost number depends on besides the model: versions, threads, the device and its name."""
    import torch

    env: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                           "python": platform.python_version(), "machine": platform.machine(),
                           "device": device}
    if "diffusers" in sys.modules:  # only when the adapter uses it: importing it here would cost seconds
        env["diffusers"] = getattr(sys.modules["diffusers"], "__version__", "?")
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
        env["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
        env["tf32_cudnn"] = bool(torch.backends.cudnn.allow_tf32)
    else:
        env["gpu"] = ""
        env["cpu"] = platform.processor() or platform.machine()
    return env
