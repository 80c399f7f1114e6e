"""Per-image CPU work (PNG/JPEG decoding, sha256 checks, PIL resizes) on a shared thread pool.

Pillow's decoders and resamplers and hashlib release the GIL, so threads scale with cores; on a GPU node this
work, not the network, bounds extraction (decoding a 512 px PNG costs ~4.5 ms on one core, an Inception
forward well under 1 ms on an H100). Every item is processed on its own and results keep input order, so the
numbers are exactly those of a serial loop.

Threads: ``$HARNESS_CPU_THREADS`` if set, else torch's intra-op thread count (the local executor gives each
worker process its share of the cores that way). One thread means a plain serial loop. Work submitted from a
pool thread runs serially in that thread (no nested waits on a busy pool). The pool is per process and made
lazily, so spawned workers get their own.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from harness.errors import HarnessError

T = TypeVar("T")
R = TypeVar("R")

_LOCK = threading.Lock()
_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, threads, pool)
_IN_POOL = threading.local()
# Torch's thread count outside a feature extraction, while one pins torch to its spec's count
# (harness.features.base.fixed_threads): the pool keeps its size instead of shrinking to the pin.
_UNPINNED_TORCH_THREADS: int | None = None


def cpu_threads() -> int:
    env = os.environ.get("HARNESS_CPU_THREADS")
    if env is not None:
        try:
            threads = int(env)
        except ValueError:
            threads = 0
        if threads < 1:
            raise HarnessError(f"HARNESS_CPU_THREADS={env!r}: expected a whole number >= 1")
        return threads
    import torch

    return max(1, _UNPINNED_TORCH_THREADS or torch.get_num_threads())


def _mark_pool_thread() -> None:
    _IN_POOL.active = True


def _pool(threads: int) -> ThreadPoolExecutor:
    global _POOL
    with _LOCK:
        if _POOL is None or _POOL[0] != os.getpid() or _POOL[1] != threads:
            # The old pool is dropped, not shut down: a stream still running on it finishes there.
            _POOL = (os.getpid(), threads, ThreadPoolExecutor(threads, thread_name_prefix="harness-cpu",
                                                               initializer=_mark_pool_thread))
        return _POOL[2]


def _serial() -> bool:
    return getattr(_IN_POOL, "active", False) or cpu_threads() == 1


def thread_map(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]``, computed on the pool; the first exception (in input order) is raised."""
    items = list(items)
    if len(items) < 2 or _serial():
        return [fn(x) for x in items]
    return list(_pool(cpu_threads()).map(fn, items))


def prefetched_map(fn: Callable[[T], R], items: Iterable[T], ahead: int) -> Iterator[R]:
    """Yield ``fn(x)`` in input order while up to ``ahead`` later items are already being computed, so the
    consumer's work (a network forward) overlaps with the producer's (decoding the next batch)."""
    if _serial():
        yield from (fn(x) for x in items)
        return
    pool, in_flight = _pool(cpu_threads()), deque()
    iterator = iter(items)
    try:
        for x in iterator:
            in_flight.append(pool.submit(fn, x))
            if len(in_flight) > ahead:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
    finally:
        for future in in_flight:  # the consumer stopped early or an item failed: drop what is still queued
            future.cancel()


__all__ = ["cpu_threads", "prefetched_map", "thread_map"]
