"""FID: streamed float64 feature statistics, and the metric classes over them.

The distance itself lives in ``frechet.py`` (re-exported here): the statistics route (symmetric d x d
eigenproblems) and, when a cell has fewer samples than feature dimensions, the exact Gram route on its rows
(an n x n eigenproblem). ``FID.compute`` keeps a cell's rows while n < d (at most d² floats, the size of the
covariance it builds anyway) so it can take the cheap route.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError
from harness.metrics.base import Metric, MetricResult, ShardFeatures
from harness.metrics.frechet import frechet_distance, frechet_distance_gram, frechet_replicates, sqrt_psd
from harness.references.stats import StreamingStats

__all__ = ["FID", "FIDClean", "FIDTF1", "StreamingStats", "frechet_distance", "frechet_distance_gram",
           "frechet_replicates", "sqrt_psd"]

MIN_RELIABLE_N = 2048  # below the feature dimension the sample covariance is rank-deficient




# √Σ_ref of the last reference seen: one d=2048 eigh per reference, not per cell. Keyed by the reference's id AND a
# fingerprint of its sigma (an imported or rebuilt reference may reuse an id); the lock keeps threads that score
# cells at once from reading a half-replaced entry.
_SQRT_MEMO: dict[tuple, torch.Tensor] = {}
_SQRT_LOCK = threading.Lock()


def _reference_sqrt(reference: Any) -> torch.Tensor:
    sigma = np.asarray(reference.sigma)
    key = (reference.reference_id, sigma.shape, float(np.trace(sigma)), float(sigma.sum()),
           np.ascontiguousarray(sigma).ravel()[:512].tobytes())  # the first row's values, not a 32 MB copy
    with _SQRT_LOCK:
        if key not in _SQRT_MEMO:
            _SQRT_MEMO.clear()  # keep one: runs score many cells against the same reference in a row
            _SQRT_MEMO[key] = sqrt_psd(reference.sigma)
        return _SQRT_MEMO[key]


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
        from harness.references.artefacts import ReferenceStats, check_reference  # lazy: keeps torch out of planning

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
        return frechet_replicates(features, reference.mu, reference.sigma, indices, _reference_sqrt(reference))


class FIDTF1(FID):
    name = "fid_tf1"
    variant = "inception-tf1(torch-fidelity port,TF1 bilinear)/pool3/float64-eigh"
    extractor = "inception-tf1"


class FIDClean(FID):
    name = "fid_clean"
    variant = "inception-clean(PIL bicubic float)/pool3/float64-eigh"
    extractor = "inception-clean"
