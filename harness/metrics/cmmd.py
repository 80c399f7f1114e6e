"""CMMD: squared MMD between CLIP embeddings under a Gaussian RBF kernel (Jayasumana et al. 2024, "Rethinking
FID: Towards a Better Evaluation Metric for Image Generation").

As the reference code defines it: k(x, y) = exp(-‖x - y‖² / (2σ²)) with σ = 10 on L2-normalised CLIP
ViT-L/14@336px embeddings (``harness/features/clip_cmmd.py``); the biased ("minimum variance") estimator
MMD² = mean K_gg + mean K_rr - 2 mean K_gr over all pairs, diagonals included; times 1000. No subsets and no
seed: the value is a deterministic function of the two row sets. Computed in float64 over row blocks (the
reference code holds whole n x n float32 matrices), so 30k x 30k references fit in memory; the reference's
own term is computed once per reference and reused across cells.

Bootstrap replicates: the same estimator on the resampled generated rows (multiplicity counts; reference
fixed), from the generated n x n kernel matrix computed once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.metrics.base import MetricResult, RowsVsReferenceMetric, ShardFeatures
from harness.metrics.mmd import as_f64, check_bootstrap_size, count_weighted_replicates

SIGMA = 10.0
SCALE = 1000.0
BLOCK_ELEMENTS = 1 << 22  # kernel entries per block: 32 MB of float64


def rbf_kernel(x: np.ndarray, y: np.ndarray, sigma: float = SIGMA, y_squared: np.ndarray | None = None) -> np.ndarray:
    """exp(-‖x_i - y_j‖² / (2σ²)) for float64 rows, through the expanded square -2xᵀy + ‖x‖² + ‖y‖² as the
    reference code computes it, in one buffer (in place)."""
    k = x @ y.T
    k *= -2.0
    k += (x * x).sum(axis=1)[:, None]
    k += ((y * y).sum(axis=1) if y_squared is None else y_squared)[None, :]
    k *= -1.0 / (2.0 * sigma * sigma)
    return np.exp(k, out=k)


def kernel_row_sums(x: np.ndarray, y: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """Σ_j k(x_i, y_j) per row of x, over blocks of rows so no len(x) x len(y) matrix is held."""
    block = max(1, BLOCK_ELEMENTS // max(1, len(y)))
    y_squared = (y * y).sum(axis=1)
    return np.concatenate([rbf_kernel(x[i:i + block], y, sigma, y_squared).sum(axis=1)
                           for i in range(0, len(x), block)])


def kernel_mean(x: np.ndarray, y: np.ndarray, sigma: float = SIGMA) -> float:
    return float(kernel_row_sums(x, y, sigma).sum() / (len(x) * len(y)))


def cmmd(gen: np.ndarray, ref: np.ndarray, sigma: float = SIGMA, scale: float = SCALE,
         reference_term: float | None = None) -> float:
    """scale x biased MMD² (float64). ``reference_term``: mean K_rr when already known for this reference."""
    gen, ref = as_f64("cmmd", "generated", gen), as_f64("cmmd", "reference", ref)
    if gen.shape[1] != ref.shape[1]:
        raise HarnessError(f"cmmd: embedding dimensions differ: generated {gen.shape[1]}, reference {ref.shape[1]}")
    if len(gen) < 1 or len(ref) < 1:
        raise HarnessError(f"cmmd: needs at least 1 sample on each side, got {len(gen)} and {len(ref)}")
    k_rr = kernel_mean(ref, ref, sigma) if reference_term is None else reference_term
    return scale * (kernel_mean(gen, gen, sigma) + k_rr - 2.0 * kernel_mean(gen, ref, sigma))


_REFERENCE_TERM: dict[str, float] = {}  # reference_id -> mean K_rr: one n_ref² pass per reference, not per cell


class CMMD(RowsVsReferenceMetric):
    name = "cmmd"
    variant = (f"clip-vit-l-14-336(openai, CMMD preprocessing)/image_embeds/rbf(sigma={SIGMA:g})"
               f"-mmd2-biased x{SCALE:g},float64")
    higher_is_better = False
    value_range = (0.0, None)  # the biased MMD² estimate is a squared RKHS norm (KID's unbiased one is not)
    extractor = "clip-vit-l-14-336-cmmd"
    output = "image_embeds"

    def _reference_term(self, ref: Any) -> tuple[np.ndarray, float]:
        rows = as_f64(self.name, "reference", ref.features)
        if ref.reference_id not in _REFERENCE_TERM:
            _REFERENCE_TERM.clear()  # keep one: runs score many cells against the same reference in a row
            _REFERENCE_TERM[ref.reference_id] = kernel_mean(rows, rows)
        return rows, _REFERENCE_TERM[ref.reference_id]

    def compute(self, shards: Iterable[ShardFeatures], reference: Any | None) -> MetricResult:
        gen, ref = self._rows(shards, reference)
        rows, term = self._reference_term(ref)
        value = cmmd(gen, rows, reference_term=term)
        return MetricResult(value=value, ci_low=None, ci_high=None, n=len(gen), details={
            "sigma": SIGMA, "scale": SCALE, "estimator": "biased (V-statistic), diagonals included",
            "reference_id": ref.reference_id, "reference_n": ref.n})

    def replicates(self, features: np.ndarray, labels: tuple[int | None, ...], reference: Any | None,
                   indices: np.ndarray) -> np.ndarray:
        from harness.references.artefacts import check_reference_features

        rows, term = self._reference_term(check_reference_features(self, reference))
        gen = as_f64(self.name, "generated", features)
        check_bootstrap_size(self.name, len(gen))
        values = count_weighted_replicates(rbf_kernel(gen, gen), kernel_row_sums(gen, rows), term, len(rows),
                                           indices, exclude_diagonal=False)
        return SCALE * values
