"""KID: unbiased MMD² with the cubic polynomial kernel k(x, y) = (xᵀy / d + 1)³, float64.

Point estimate: mean over ``subsets`` random subsets of size m = min(1000, n_gen, n_ref), drawn
without replacement with ``numpy.random.RandomState(seed)`` (generated then reference indices per
subset, torch-fidelity's order, so equal inputs give equal subsets). Per subset the estimator is
(ΣXX_{i≠j} + ΣYY_{i≠j}) / (m(m-1)) - 2 ΣXY / m² (torch-fidelity's and MMD-GAN's "unbiased").

Bootstrap replicates use the same estimator on the whole resampled set with multiplicity counts
(the quantity the subset average estimates), from kernel matrices computed once. A resample repeats rows,
and a repeated row's pairs with itself enter Σ_{i≠j}: the replicates sit above the estimate, so their
interval is the median-centred one of ``harness.metrics.bootstrap`` (their spread only).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.metrics.base import MetricResult, RowsVsReferenceMetric, ShardFeatures
from harness.metrics.mmd import as_f64, check_bootstrap_size, count_weighted_replicates

SUBSETS = 100
SUBSET_SIZE = 1000
SEED = 2020


def poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    m = len(k_xx)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kid(gen: np.ndarray, ref: np.ndarray, subsets: int = SUBSETS, subset_size: int = SUBSET_SIZE,
        seed: int = SEED) -> tuple[float, float, int]:
    """(mean, std with ddof=0, subset size used) of the unbiased MMD² over seeded subsets."""
    gen, ref = as_f64("kid", "generated", gen), as_f64("kid", "reference", ref)
    if gen.shape[1] != ref.shape[1]:
        raise HarnessError(f"kid: feature dimensions differ: generated {gen.shape[1]}, reference {ref.shape[1]}")
    m = min(subset_size, len(gen), len(ref))
    if m < 2:
        raise HarnessError(f"kid: needs at least 2 samples on each side, got {len(gen)} and {len(ref)}")
    rng = np.random.RandomState(seed)
    values = np.empty(subsets, dtype=np.float64)
    for i in range(subsets):
        x = gen[rng.choice(len(gen), m, replace=False)]
        y = ref[rng.choice(len(ref), m, replace=False)]
        values[i] = mmd2_unbiased(poly_kernel(x, x), poly_kernel(x, y), poly_kernel(y, y))
    return float(values.mean()), float(values.std()), m


class KID(RowsVsReferenceMetric):
    name = "kid"
    # The subset size depends on the cell: m = min(1000, n, reference n) (each row's details record m).
    variant = (f"inception-tf1/pool3/poly3-unbiased/subsets={SUBSETS}xmin({SUBSET_SIZE},n,reference_n),"
               f"seed={SEED},float64")
    higher_is_better = False
    value_range = (None, None)  # the unbiased MMD² estimate goes below 0 when the sets are close
    extractor = "inception-tf1"
    output = "pool3"

    def compute(self, shards: Iterable[ShardFeatures], reference: Any | None) -> MetricResult:
        gen, ref = self._rows(shards, reference)
        mean, std, m = kid(gen, ref.features)
        return MetricResult(value=mean, ci_low=None, ci_high=None, n=len(gen), details={
            "std": std, "std_ddof": 0, "subsets": SUBSETS, "subset_size": m, "seed": SEED,
            "reference_id": ref.reference_id, "reference_n": ref.n})

    def replicates(self, features: np.ndarray, labels: tuple[int | None, ...], reference: Any | None,
                   indices: np.ndarray) -> np.ndarray:
        from harness.references.artefacts import check_reference_features

        ref = as_f64("kid", "reference", check_reference_features(self, reference).features)
        gen = as_f64("kid", "generated", features)
        if len(gen) < 2:  # the unbiased within-set term divides by n(n - 1)
            raise HarnessError(f"kid: needs at least 2 generated samples, got {len(gen)}")
        check_bootstrap_size("kid", len(gen))
        k_rr, r = poly_kernel(ref, ref), len(ref)
        ref_term = (k_rr.sum() - np.trace(k_rr)) / (r * (r - 1))
        return count_weighted_replicates(poly_kernel(gen, gen), poly_kernel(gen, ref).sum(axis=1), ref_term, r,
                                         indices, exclude_diagonal=True)
