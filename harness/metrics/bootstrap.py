"""Bootstrap over the samples of a cell, and the one place every printed interval is made valid.

Replicate b of a cell with n samples resamples sample indices with
``numpy.random.default_rng([bootstrap_seed(cell_id), b]).integers(0, n, n)``, the same for every
metric of that cell, so replicates are paired across metrics. The reference side stays fixed.

Interval methods (docs/metrics.md gives the estimands and the coverage measured by bench/ci_coverage.py):
- a metric with an interval of its own that is valid for its statistic keeps it (Wilson for class alignment,
  the normal interval of a mean for CLIP/Pick scores, the jackknife for coverage, the delta method for Vendi);
  its replicates are still saved for pairing (MMHM, Δ), *calibrated* to that interval
  (:func:`calibrated_replicates`): where the plain bootstrap is too narrow for the statistic (coverage, Vendi:
  bench/ci_coverage_diversity.py), pairing raw replicates would make every MMHM and Δ interval too narrow too;
- every other metric (FID-type, KID, CMMD, IS, precision/recall, per-class means) gets the *median-centred
  basic* bootstrap interval: ``[T − (q97.5 − med), T − (q2.5 − med)]`` of the replicates q. Resampling with
  replacement duplicates rows, which shifts plug-in statistics such as FID upward (the whole percentile
  interval used to lie above the value); the bootstrap is used for the spread of T around its expectation
  only, measured from the replicates' median, never for their location.
Every interval passes :func:`checked_interval` (it must contain its own value) before it is recorded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.hashing import digest

CI_PERCENTILES = (2.5, 97.5)
# Recorded in score-cache keys and row details: changing the method must not reuse intervals made by another.
CI_METHOD = ("bootstrap basic, median-centred, 2.5/97.5, cut to the metric's range; "
             "pairing replicates calibrated to own intervals")
# Float rounding of a bound computed as T − (q − med) may put it a few ulps on the wrong side of T.
_ROUNDING = 1e-12


def bootstrap_seed(cell_id: str) -> int:
    """The integer seed of a cell's bootstrap: the 64-bit ``digest([cell_id, "bootstrap"])``."""
    return int(digest([cell_id, "bootstrap"]), 16)


def bootstrap_indices(cell_id: str, n: int, replicates: int) -> np.ndarray:
    """(B, n) int64 resampled sample indices; row b is the contract's replicate b."""
    if n < 1 or replicates < 0:
        raise HarnessError(f"bootstrap_indices: needs n >= 1 and B >= 0, got n={n}, B={replicates}")
    seed = bootstrap_seed(cell_id)
    out = np.empty((replicates, n), dtype=np.int64)
    for b in range(replicates):
        out[b] = np.random.default_rng([seed, b]).integers(0, n, n)
    return out


def _finite_replicates(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise HarnessError(f"bootstrap: expected a non-empty 1-d array of replicates, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise HarnessError(f"bootstrap: {int((~np.isfinite(values)).sum())} of {len(values)} bootstrap "
                           f"replicates are NaN/Inf")
    return values


def percentile_ci(values: np.ndarray) -> tuple[float, float]:
    """(2.5, 97.5) percentiles of finite replicate values; refuses NaN/Inf instead of hiding them.
    Not an interval for a biased statistic by itself: use :func:`replicate_interval`."""
    low, high = np.percentile(_finite_replicates(values), CI_PERCENTILES)
    return float(low), float(high)


def centred_replicates(value: float, replicates: np.ndarray) -> np.ndarray:
    """The replicates reflected about their median onto the estimate: ``value − (r − median(r))``.

    Their spread is the bootstrap's estimate of the spread of the statistic around its expectation, their
    median is ``value`` exactly; MMHM and paired differences combine these, not the raw replicates."""
    reps = _finite_replicates(replicates)
    return float(value) - (reps - np.median(reps))


def shifted_interval(value: float, draws: np.ndarray, what: str = "interval") -> tuple[float, float]:
    """(2.5, 97.5) percentiles of ``draws`` moved so that their median sits on ``value`` (draws already in
    the estimate's space: centred replicates, or a function of them such as MMHM or a difference)."""
    draws = _finite_replicates(draws)
    low, high = np.percentile(draws - np.median(draws), CI_PERCENTILES)
    return checked_interval(value, float(value) + float(low), float(value) + float(high), what)


def replicate_interval(value: float, replicates: np.ndarray, what: str = "interval") -> tuple[float, float]:
    """The median-centred basic bootstrap interval ``[T − (q97.5 − med), T − (q2.5 − med)]``."""
    return shifted_interval(value, centred_replicates(value, replicates), what)


def calibrated_replicates(value: float, low: float, high: float, replicates: np.ndarray) -> np.ndarray:
    """The replicates stretched about their median, each side by its own factor, so that the interval they give
    (:func:`replicate_interval`) is exactly the metric's own valid ``[low, high]``.

    The transform is monotone, so replicate b keeps its rank and the pairing across metrics (its correlation
    with the other metrics' replicate b) survives; only the marginal spread changes, from the bootstrap's to the
    one the metric's interval was measured to need. A side with no spread (every replicate on the median)
    cannot be stretched and is left as it is."""
    reps = _finite_replicates(replicates).astype(np.float64)
    low, high = checked_interval(value, low, high, "calibrated_replicates")
    med = float(np.median(reps))
    q_low, q_high = np.percentile(reps, CI_PERCENTILES)
    ordered = np.sort(reps)
    # With an even count the median is the mean of two middle replicates, one on each side, so it moves when the
    # sides stretch by different factors: g is their half-gap, and the factors solve the two linear conditions
    # q97.5' - median' = T - low and median' - q2.5' = high - T (replicate_interval's bounds; upper tail → low).
    g = 0.0 if len(reps) % 2 else float(ordered[len(reps) // 2] - ordered[len(reps) // 2 - 1]) / 2
    above, below = float(q_high) - med, med - float(q_low)
    up = (value - low) / above if above > 0 else 1.0  # exact when g = 0; the start where the solve is singular
    down = (high - value) / below if below > 0 else 1.0
    if above > g / 2 and below > g / 2:
        system = np.array([[above - g / 2, g / 2], [g / 2, below - g / 2]])
        solved = np.linalg.solve(system, [value - low, high - value])
        if (solved >= 0).all():
            up, down = float(solved[0]), float(solved[1])
    return np.where(reps >= med, med + (reps - med) * up, med + (reps - med) * down)


def covers(value: float, low: float, high: float) -> bool:
    """Whether [low, high] contains value (up to float rounding of the bounds)."""
    slack = _ROUNDING * max(1.0, abs(value))
    return bool(low - slack <= value <= high + slack)


def checked_interval(value: float, low: float, high: float, what: str = "interval") -> tuple[float, float]:
    """The single gate every interval passes before it is recorded or printed: it must contain its value.

    Bounds within float rounding of the value are snapped onto it; anything else is refused by name."""
    if not (np.isfinite(value) and np.isfinite(low) and np.isfinite(high)) or not covers(value, low, high):
        raise HarnessError(f"{what}: interval [{low!r}, {high!r}] does not contain its value {value!r}; "
                           f"refusing to record an interval that excludes its own estimate")
    return min(float(low), float(value)), max(float(high), float(value))


def bootstrap_interval(name: str, value: float, own_ci: tuple[Any, Any], replicates: np.ndarray,
                       value_range: tuple[float | None, float | None] = (None, None)) -> tuple[float, float, str]:
    """(low, high, how) of one metric given its B replicates: its own valid interval when it has one
    (kept; the replicates are then only for pairing), else :func:`replicate_interval` cut to ``value_range``
    (the values the statistic can take, e.g. FID >= 0; the value itself is inside it, so the cut keeps it)."""
    low, high = own_ci
    if low is not None and high is not None:
        low, high = checked_interval(value, low, high, f"metric {name}")
        return low, high, "own interval (bootstrap replicates saved for pairing)"
    low, high = replicate_interval(value, replicates, f"metric {name}")
    floor, ceiling = value_range
    low = low if floor is None else max(low, min(floor, value))
    high = high if ceiling is None else min(high, max(ceiling, value))
    return low, high, f"{CI_METHOD}, B={len(replicates)}, paired across metrics"
