"""FID: streamed float64 feature statistics, and the metric classes over them.

The distance itself lives in ``frechet.py`` (re-exported here): the statistics route (symmetric d x d
eigenproblems) and, when a cell has fewer samples than feature dimensions, the exact Gram route on its rows
(an n x n eigenproblem). ``FID.compute`` keeps a cell's rows while n < d (at most d² floats, the size of the
covariance it builds anyway) so it can take the cheap route.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError
from harness.metrics.base import Metric, MetricResult, ShardFeatures
from harness.metrics.frechet import frechet_distance, frechet_distance_gram, frechet_replicates, sqrt_psd

__all__ = ["FID", "FIDClean", "FIDTF1", "StreamingStats", "frechet_distance", "frechet_distance_gram",
           "frechet_replicates", "sqrt_psd"]

MIN_RELIABLE_N = 2048  # below the feature dimension the sample covariance is rank-deficient


class StreamingStats:
    """Running mean and covariance of feature rows in float64, mergeable across shards/processes.

    Stores (n, mean, M2 = Σ (x-mean)(x-mean)ᵀ) and combines batches with Chan et al.'s pairwise update:
    algebraically the running sum and sum of outer products, but without the cancellation of
    Σxxᵀ - n·μμᵀ when the mean is large compared with the spread.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self.n = 0
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        if self.n == 0:
            self.n, self._mean, self._m2 = n_b, mean_b.copy(), m2_b.copy()
            return
        n = self.n + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (self.n * n_b / n)
        self.n = n

    def update(self, features: np.ndarray) -> None:
        """Add a (B, d) batch of feature rows."""
        x = np.asarray(features)
        if x.ndim != 2:
            raise HarnessError(f"StreamingStats.update: expected a 2-d (n, d) feature array, got shape {x.shape}")
        if self.dim is None:
            self.dim = x.shape[1]
        if x.shape[1] != self.dim:
            raise HarnessError(f"StreamingStats.update: feature dimension {x.shape[1]} != {self.dim} seen before")
        if len(x) == 0:
            return
        x = x.astype(np.float64, copy=False)
        if not np.isfinite(x).all():
            raise HarnessError(f"StreamingStats.update: {int((~np.isfinite(x)).sum())} non-finite feature values")
        mean_b = x.mean(axis=0)
        centred = x - mean_b
        self._combine(len(x), mean_b, centred.T @ centred)

    def merge(self, other: StreamingStats) -> StreamingStats:
        """Fold ``other`` into this accumulator (in place) and return self."""
        if other.n == 0:
            return self
        if self.dim is not None and other.dim != self.dim:
            raise HarnessError(f"StreamingStats.merge: feature dimension {other.dim} != {self.dim}")
        self.dim = other.dim
        self._combine(other.n, other._mean, other._m2)
        return self

    @property
    def mean(self) -> np.ndarray:
        if self.n == 0:
            raise HarnessError("StreamingStats.mean: no features were added")
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        """Unbiased sample covariance (÷ (N-1)), as np.cov."""
        if self.n < 2:
            raise HarnessError(f"StreamingStats.cov: needs at least 2 feature rows, got {self.n}")
        return self._m2 / (self.n - 1)


_SQRT_MEMO: dict[str, torch.Tensor] = {}  # reference_id -> √Σ_ref: one d=2048 eigh per reference, not per cell


class FID(Metric):
    name = "fid"
    variant = "inception-fid-helper/pool3/float64-eigh"
    higher_is_better = False
    value_range = (0.0, None)  # a squared distance
    extractor = "inception-fid-helper"
    output = "pool3"
    needs_reference = True
    min_reliable_n = MIN_RELIABLE_N  # the feature dimension: below it the covariance is rank-deficient

    def _check_reference(self, reference: Any) -> Any:
        from harness.features.reference import ReferenceStats, check_reference  # lazy: features imports metrics

        return check_reference(self, reference, ReferenceStats, unrecorded_output_ok=True)

    def compute(self, shards: Iterable[ShardFeatures], reference: Any | None) -> MetricResult:
        reference = self._check_reference(reference)
        dim = len(reference.mu)
        stats = StreamingStats(dim=dim)
        rows: list[np.ndarray] | None = []  # kept while n < d: the Gram route needs them
        for shard in shards:  # streamed: beyond d rows only one shard's features are in memory at a time
            stats.update(shard.features)
            rows = rows + [np.asarray(shard.features)] if rows is not None and stats.n < dim else None
        if stats.n < 2:
            raise HarnessError(f"{self.name}: needs at least 2 samples, got {stats.n}")
        if rows is not None:
            value, details = frechet_distance_gram(np.concatenate(rows), reference.mu, reference.sigma)
        else:
            value, details = frechet_distance(stats.mean, stats.cov, reference.mu, reference.sigma)
        details.update(reference_id=reference.reference_id, reference_n=reference.n)
        small = [f"{who} n={k}" for who, k in (("samples", stats.n), ("reference", reference.n))
                 if k < self.min_reliable_n]
        if small:
            details["warning"] = (f"{', '.join(small)} < {self.min_reliable_n}: the covariance is rank-deficient "
                                  f"and FID is biased upward; compare only values computed at equal n")
        return MetricResult(value=value, ci_low=None, ci_high=None, n=stats.n, details=details)

    def replicates(self, features: np.ndarray, labels: tuple[int | None, ...], reference: Any | None,
                   indices: np.ndarray) -> np.ndarray:
        reference = self._check_reference(reference)
        if len(features) < len(reference.mu):  # the Gram route needs no square root of the reference
            return frechet_replicates(features, reference.mu, reference.sigma, indices)
        if reference.reference_id not in _SQRT_MEMO:
            _SQRT_MEMO.clear()  # keep one: runs score many cells against the same reference in a row
            _SQRT_MEMO[reference.reference_id] = sqrt_psd(reference.sigma)
        return frechet_replicates(features, reference.mu, reference.sigma, indices, _SQRT_MEMO[reference.reference_id])


class FIDTF1(FID):
    name = "fid_tf1"
    variant = "inception-tf1(torch-fidelity port,TF1 bilinear)/pool3/float64-eigh"
    extractor = "inception-tf1"


class FIDClean(FID):
    name = "fid_clean"
    variant = "inception-clean(PIL bicubic float)/pool3/float64-eigh"
    extractor = "inception-clean"
