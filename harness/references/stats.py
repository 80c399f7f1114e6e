"""Streaming feature statistics: running float64 mean and covariance, mergeable across shards and processes."""

from __future__ import annotations

import numpy as np

from harness.errors import HarnessError


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
