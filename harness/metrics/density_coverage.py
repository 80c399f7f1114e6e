"""Density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative Models").

With real (reference) rows X_1..X_N, generated rows Y_1..Y_M and NND_k(X_i) the distance from X_i to its k-th
nearest *other* real row (k = 5, the paper's default):

- density  = (1 / kM) Σ_j Σ_i 1[Y_j ∈ B(X_i, NND_k(X_i))]   (how many real balls each sample falls in, / k)
- coverage = (1 / N)  Σ_i 1[∃ j: Y_j ∈ B(X_i, NND_k(X_i))]  (the fraction of real balls holding a sample)

Membership is strict (d < radius), as in the authors' ``prdc`` package. Distances are float64 Euclidean, in blocks
of reference rows (never the whole N x M matrix as floats in memory).

Intervals are each metric's own (docs/metrics.md gives the measured coverage): density is a mean over samples of
(balls holding the sample) / k, so it gets the normal interval of a mean; coverage a normal interval with the
jackknife standard error (the bootstrap's spread is too narrow for it, see ``Coverage``).

Bootstrap replicates (saved for pairing in MMHM and Δ; reference fixed, so the radii are fixed): a resample with
multiplicities c has density Σ_j c_j·count_j / kM, a count-weighted mean of the per-sample ball counts, and
coverage the fraction of real balls holding at least one *present* sample (c_j > 0): one sparse (N x M)
ball-membership matrix times the (M x B) presence matrix gives every replicate at once. Both equal the metric
recomputed on the resampled rows.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from scipy import sparse

from harness.errors import HarnessError
from harness.metrics.base import MetricResult, RowsVsReferenceMetric, ShardFeatures

K = 5
Z_95 = 1.959963984540054  # two-sided 95 % normal quantile
BLOCK = 1024  # reference rows per distance block: BLOCK x M float64 distances at a time
MAX_MEMBERSHIPS = 200_000_000  # (real ball, sample) pairs kept for the bootstrap (~2.4 GB as a sparse matrix)


def _f64(metric: str, side: str, x: np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if t.ndim != 2:
        raise HarnessError(f"{metric}: {side} features must be a 2-d (n, d) array, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():  # a NaN distance compares False: the row would silently count as outside
        raise HarnessError(f"{metric}: {side} features contain {int((~torch.isfinite(t)).sum())} non-finite "
                           f"values (NaN/Inf)")
    return t


def real_radii(metric: str, real: torch.Tensor, k: int = K) -> torch.Tensor:
    """NND_k: the distance of each real row to its k-th nearest other real row (the row itself is the 0th)."""
    if len(real) <= k:
        raise HarnessError(f"{metric}: needs more than k={k} reference rows for the k-NN radii, got {len(real)}")
    out = torch.empty(len(real), dtype=torch.float64)
    for start in range(0, len(real), BLOCK):
        out[start:start + BLOCK] = torch.cdist(real[start:start + BLOCK], real).kthvalue(k + 1, dim=1).values
    return out


def memberships(real: torch.Tensor, radii: torch.Tensor, fake: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(real index, sample index) of every pair with the sample strictly inside the real row's ball."""
    rows, cols = [], []
    for start in range(0, len(real), BLOCK):
        inside = torch.cdist(real[start:start + BLOCK], fake) < radii[start:start + BLOCK].unsqueeze(1)
        i, j = torch.nonzero(inside, as_tuple=True)
        rows.append(i.numpy() + start)
        cols.append(j.numpy())
    return np.concatenate(rows), np.concatenate(cols)


# One entry each: the reference's radii (an N x N comparison, the same for every cell scored against it) and the
# last cell's ball memberships (density, coverage and their bootstrap replicates read the same N x M comparison).
_RADII: dict[tuple[str, int], torch.Tensor] = {}  # (sha256 of the reference rows, k) -> radii
_MEMO: dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]] = {}  # ... + sha256 of the cell's rows


def _memo_one(memo: dict, key: Any, make: Any) -> Any:
    if key not in memo:
        memo.clear()  # keep one: a run scores its cells against the same reference, a cell's metrics in a row
        memo[key] = make()
    return memo[key]


def cell_memberships(metric: str, gen: np.ndarray, reference: Any, k: int = K) -> tuple[np.ndarray, np.ndarray, int]:
    """(real index, sample index) pairs of a cell against a checked ``ReferenceFeatures``, and the sample count."""
    g, r = _checked(metric, gen, reference.features)
    # keyed by the rows themselves: a reference_id names the reference's recipe, and tests (or a rebuilt cache)
    # can hand in other rows under the same recipe
    rows = hashlib.sha256(r.numpy().tobytes()).hexdigest()
    radii = _memo_one(_RADII, (rows, k), lambda: real_radii(metric, r, k))
    cell = (rows, k, hashlib.sha256(g.numpy().tobytes()).hexdigest())
    return (*_memo_one(_MEMO, cell, lambda: memberships(r, radii, g)), len(g))


def _checked(metric: str, gen: np.ndarray, ref: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    g, r = _f64(metric, "generated", gen), _f64(metric, "reference", ref)
    if g.shape[1] != r.shape[1]:
        raise HarnessError(f"{metric}: feature dimensions differ: generated {g.shape[1]}, reference {r.shape[1]}")
    if len(g) < 1:
        raise HarnessError(f"{metric}: needs at least 1 generated sample, got 0")
    return g, r


def density_coverage(gen: np.ndarray, ref: np.ndarray, k: int = K,
                     metric: str = "density_coverage") -> tuple[float, float]:
    """(density, coverage) of generated rows ``gen`` against real rows ``ref``."""
    g, r = _checked(metric, gen, ref)
    i, _ = memberships(r, real_radii(metric, r, k), g)
    return from_memberships(i, len(g), len(r), k)


def from_memberships(real_index: np.ndarray, n: int, n_ref: int, k: int = K) -> tuple[float, float]:
    """(density, coverage) from the real-ball index of every (ball, sample) membership pair."""
    return len(real_index) / (k * n), len(np.unique(real_index)) / n_ref


def _at_least_two(metric: str, n: int) -> None:
    if n < 2:  # both intervals divide by n - 1
        raise HarnessError(f"{metric}: needs at least 2 generated samples for its interval, got {n}")


class Density(RowsVsReferenceMetric):
    name = "density"
    variant = f"inception-tf1/pool3/naeem-k={K}/float64,strict-<"
    source = "Naeem et al. 2020, Reliable Fidelity and Diversity Metrics for Generative Models (ICML)"
    # Fidelity: 1 in expectation when the generator matches the reference; above 1 when samples crowd the
    # dense regions of the reference (docs/metrics.md), so "higher" is better only up to about 1.
    higher_is_better = True
    value_range = (0.0, None)  # at most N/k, which depends on the reference
    monotone = False  # ~1 for real-like samples; above it samples crowd dense regions: kept out of MMHM's default
    extractor = "inception-tf1"
    output = "pool3"

    def compute(self, shards: Iterable[ShardFeatures], reference: Any | None) -> MetricResult:
        gen, ref = self._rows(shards, reference)
        i, j, n = cell_memberships(self.name, gen, ref)
        density, coverage = from_memberships(i, n, len(ref.features))
        value = coverage if isinstance(self, Coverage) else density
        low, high, how = self.own_interval(value, i, j, n, len(ref.features))
        return MetricResult(value=value, ci_low=low, ci_high=high, n=n, details={
            "k": K, "density": density, "coverage": coverage, "reference_id": ref.reference_id,
            "reference_n": ref.n, **({"ci": how} if how else {})})

    def own_interval(self, value: float, i: np.ndarray, j: np.ndarray, n: int,
                     n_ref: int) -> tuple[float | None, float | None, str]:
        """Density is the mean over samples of (reference balls holding the sample) / k: the normal interval of a
        mean. Measured (bench/ci_coverage_diversity.py) 0.940-0.958 at n = 100 and 1000, where the median-centred
        bootstrap gave 0.922-0.945: the per-sample counts are right-skewed and the reflection puts the long side of
        the interval on the wrong side."""
        _at_least_two(self.name, n)
        per_sample = np.bincount(j, minlength=n) / K
        half = Z_95 * float(per_sample.std(ddof=1)) / math.sqrt(n)
        return max(0.0, value - half), value + half, "normal-95 of the mean over samples of (balls holding it)/k"

    def replicates(self, features: np.ndarray, labels: tuple[int | None, ...], reference: Any | None,
                   indices: np.ndarray) -> np.ndarray:
        from harness.references.artefacts import check_reference_features

        ref = check_reference_features(self, reference)
        i, j, n = cell_memberships(self.name, features, ref)
        counts = np.stack([np.bincount(idx, minlength=n) for idx in indices]).astype(np.float64)  # (B, n)
        if not isinstance(self, Coverage):
            per_sample = np.bincount(j, minlength=n).astype(np.float64)  # real balls holding sample j
            return counts @ per_sample / (K * n)
        if len(i) > MAX_MEMBERSHIPS:
            raise HarnessError(f"{self.name}: bootstrap needs {len(i)} ball memberships in memory "
                               f"(> {MAX_MEMBERSHIPS}); set `bootstrap: 0` for this protocol")
        member = sparse.csr_matrix((np.ones(len(i)), (i, j)), shape=(len(ref.features), n))
        present = (counts > 0).T.astype(np.float64)  # (n, B): sample j is in replicate b
        covered = np.asarray((member @ present) > 0)  # (N, B)
        return covered.mean(axis=0)


class Coverage(Density):
    """Its own interval: value ± z·SE_jackknife, cut to [0, 1]. The bootstrap's spread is too narrow for coverage
    (a resample holds ~0.63 n distinct samples, and a ball held by one sample is then hit with probability 0.63
    only): measured 0.0086 against a true 0.0155 at n = 100 (bench/ci_coverage_diversity.py). The jackknife
    variance of a symmetric statistic of i.i.d. samples is biased upward (Efron & Stein 1981), so this interval errs
    wide. Leaving sample j out uncovers exactly the balls only j hits: C_(-j) = C - u_j / N, no recompute."""

    name = "coverage"
    # Diversity: the fraction of the reference's k-NN balls that hold at least one sample.
    higher_is_better = True
    value_range = (0.0, 1.0)

    def own_interval(self, value: float, i: np.ndarray, j: np.ndarray, n: int,
                     n_ref: int) -> tuple[float | None, float | None, str]:
        _at_least_two(self.name, n)
        hits = np.bincount(i, minlength=n_ref)  # samples inside each ball
        sole = np.bincount(j[hits[i] == 1], minlength=n) / n_ref  # u_j / N: balls only sample j hits
        half = Z_95 * math.sqrt((n - 1) / n * float(((sole - sole.mean()) ** 2).sum()))
        return max(0.0, value - half), min(1.0, value + half), "normal-95 with the jackknife standard error"


class DensityMnist(Density):
    name = "density_mnist"
    variant = f"mnist-cnn/penultimate/naeem-k={K}/float64,strict-<"
    extractor = "mnist-cnn"
    output = "penultimate"


class CoverageMnist(Coverage):
    name = "coverage_mnist"
    variant = f"mnist-cnn/penultimate/naeem-k={K}/float64,strict-<"
    extractor = "mnist-cnn"
    output = "penultimate"
