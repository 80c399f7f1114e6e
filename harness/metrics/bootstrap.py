"""Bootstrap over the samples of a cell — the contract other components (MMHM CIs) build on.

Replicate b of a cell with n samples resamples sample indices with
``numpy.random.default_rng([bootstrap_seed(cell_id), b]).integers(0, n, n)``, the same for every
metric of that cell, so replicates are paired across metrics. The reference side stays fixed.
A metric's CI is the 2.5 / 97.5 percentile of its B replicate values.
"""

from __future__ import annotations

import numpy as np

from ..errors import HarnessError
from ..hashing import digest

CI_PERCENTILES = (2.5, 97.5)


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


def percentile_ci(values: np.ndarray) -> tuple[float, float]:
    """(2.5, 97.5) percentiles of finite replicate values; refuses NaN/Inf instead of hiding them."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise HarnessError(f"percentile_ci: expected a non-empty 1-d array of replicates, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise HarnessError(f"percentile_ci: {int((~np.isfinite(values)).sum())} of {len(values)} bootstrap "
                           f"replicates are NaN/Inf")
    low, high = np.percentile(values, CI_PERCENTILES)
    return float(low), float(high)
