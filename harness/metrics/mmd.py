"""What the kernel two-sample metrics (KID, CMMD) share: input checks and count-weighted bootstrap replicates.

A bootstrap replicate resamples the generated rows with replacement, which is the estimator evaluated on
multiplicity counts c (Σc = n) — so every replicate comes from one generated n x n kernel matrix and one vector
of generated-vs-reference row sums, computed once.
"""

from __future__ import annotations

import numpy as np

from harness.errors import HarnessError

MAX_BOOTSTRAP_N = 8192  # the n x n float64 kernel matrix of the replicates: 512 MB at this n


def as_f64(metric: str, side: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise HarnessError(f"{metric}: {side} features must be a finite 2-d (n, d) array, got shape {x.shape}")
    return x


def check_bootstrap_size(metric: str, n: int) -> None:
    if n > MAX_BOOTSTRAP_N:
        raise HarnessError(f"{metric}: bootstrap needs an {n}x{n} kernel matrix (n > {MAX_BOOTSTRAP_N}); "
                           f"set `bootstrap: 0` for this protocol")


def count_weighted_replicates(k_gg: np.ndarray, k_gr_row_sums: np.ndarray, reference_term: float, n_ref: int,
                              indices: np.ndarray, exclude_diagonal: bool) -> np.ndarray:
    """MMD² per row of ``indices`` (resampled generated rows, reference fixed). ``exclude_diagonal``: the
    unbiased within-set term Σ_{i≠j} / (n(n-1)) (KID); otherwise the biased Σ_{i,j} / n² (CMMD)."""
    n = len(k_gg)
    diag = np.diagonal(k_gg)
    out = np.empty(len(indices), dtype=np.float64)
    for b, idx in enumerate(indices):
        c = np.bincount(idx, minlength=n).astype(np.float64)
        quadratic = c @ k_gg @ c
        within = (quadratic - c @ diag) / (n * (n - 1)) if exclude_diagonal else quadratic / (n * n)
        out[b] = within + reference_term - 2 * (c @ k_gr_row_sums) / (n * n_ref)
    return out
