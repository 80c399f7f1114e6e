"""Improved precision and recall (Kynkäänniemi et al. 2019), k = 3, block-wise fp32 Euclidean distances.

A sample's k-NN radius is the distance to its k-th nearest *other* sample of its own set. Precision:
the fraction of generated samples inside at least one reference ball (d(g, r) ≤ radius(r)); recall:
the fraction of reference samples inside at least one generated ball. Distances are computed in
blocks of rows (never an n x n matrix in memory) in float32, as torch-fidelity and StyleGAN do.

Bootstrap (reference fixed): precision is the count-weighted mean of the per-sample indicator; for
recall the generated manifold is rebuilt from the *distinct* resampled samples (copies of a sample
would otherwise be each other's zero-distance neighbours and shrink the balls).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError
from harness.metrics.base import MetricResult, RowsVsReferenceMetric, ShardFeatures

K = 3
BLOCK = 2048
MAX_BOOTSTRAP_CELLS = 64_000_000  # float32 distance entries kept for the recall replicates (256 MB)


def _t(x: np.ndarray, side: str) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    if not torch.isfinite(t).all():  # a NaN distance compares False: the row would silently count as outside
        raise HarnessError(f"precision_recall: {side} features contain {int((~torch.isfinite(t)).sum())} "
                           f"non-finite values (NaN/Inf)")
    return t


def _blocks(a: torch.Tensor, b: torch.Tensor):
    for start in range(0, len(a), BLOCK):
        yield start, torch.cdist(a[start:start + BLOCK], b)


def knn_radii(x: torch.Tensor, k: int = K) -> torch.Tensor:
    """Distance of each row to its k-th nearest other row (the row itself is the 0th)."""
    if len(x) <= k:
        raise HarnessError(f"precision_recall: needs more than k={k} samples per set, got {len(x)}")
    out = torch.empty(len(x))
    for start, d in _blocks(x, x):
        out[start:start + len(d)] = d.kthvalue(k + 1, dim=1).values
    return out


def inside(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Bool per query: within the radius of at least one centre."""
    out = torch.empty(len(queries), dtype=torch.bool)
    for start, d in _blocks(queries, centres):
        out[start:start + len(d)] = (d <= radii.unsqueeze(0)).any(dim=1)
    return out


def precision_recall(gen: np.ndarray, ref: np.ndarray, k: int = K) -> tuple[float, float]:
    g, r = _t(gen, "generated"), _t(ref, "reference")
    if g.ndim != 2 or r.ndim != 2 or g.shape[1] != r.shape[1]:
        raise HarnessError(f"precision_recall: expected (n, d) features of equal d, got {tuple(g.shape)} "
                           f"and {tuple(r.shape)}")
    precision = inside(g, r, knn_radii(r, k)).double().mean()
    recall = inside(r, g, knn_radii(g, k)).double().mean()
    return float(precision), float(recall)


class Precision(RowsVsReferenceMetric):
    name = "precision"
    variant = f"inception-tf1/pool3/kynkaanniemi-k={K}/fp32-blockwise"
    higher_is_better = True
    value_range = (0.0, 1.0)  # fractions of samples
    extractor = "inception-tf1"
    output = "pool3"

    def compute(self, shards: Iterable[ShardFeatures], reference: Any | None) -> MetricResult:
        gen, ref = self._rows(shards, reference)
        precision, recall = precision_recall(gen, ref.features)
        value = precision if self.name == "precision" else recall
        return MetricResult(value=value, ci_low=None, ci_high=None, n=len(gen), details={
            "k": K, "precision": precision, "recall": recall, "reference_id": ref.reference_id,
            "reference_n": ref.n})

    def replicates(self, features: np.ndarray, labels: tuple[int | None, ...], reference: Any | None,
                   indices: np.ndarray) -> np.ndarray:
        from harness.references.artefacts import check_reference_features

        g, r = _t(features, "generated"), _t(check_reference_features(self, reference).features, "reference")
        if self.name == "precision":  # reference balls fixed: a count-weighted mean of one indicator
            hit = inside(g, r, knn_radii(r)).double().numpy()
            return np.array([hit[idx].mean() for idx in indices])
        if len(g) * (len(g) + len(r)) > MAX_BOOTSTRAP_CELLS:
            raise HarnessError(f"recall: bootstrap needs {len(g)}x{len(g) + len(r)} distances in memory; "
                               f"set `bootstrap: 0` for this protocol")
        d_gg, d_rg = torch.cdist(g, g), torch.cdist(r, g)
        out = np.empty(len(indices), dtype=np.float64)
        for b, idx in enumerate(indices):
            u = torch.as_tensor(np.unique(idx))
            if len(u) <= K:
                raise HarnessError(f"recall: a bootstrap replicate has only {len(u)} distinct samples (k={K})")
            radii = d_gg[u][:, u].kthvalue(K + 1, dim=1).values
            out[b] = float((d_rg[:, u] <= radii.unsqueeze(0)).any(dim=1).double().mean())
        return out


class Recall(Precision):
    name = "recall"
