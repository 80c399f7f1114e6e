"""The Vendi score (Friedman & Dieng 2023) against independent numpy computations of its definition (the n x n
kernel route and the d x d covariance route), its limiting cases and its bootstrap fast path."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from harness.errors import HarnessError
from harness.metrics import get_metric, metric_lines, vendi
from harness.metrics.base import ShardFeatures
from harness.metrics.bootstrap import bootstrap_indices
from harness.metrics.vendi import vendi_score

RTOL = 1e-10  # float64 eigenvalues of the same spectrum by another route; measured <= 1e-13


def exp_entropy(eigvals: np.ndarray) -> float:
    p = eigvals[eigvals > 1e-15]
    return float(np.exp(-np.sum(p * np.log(p))))


def vendi_kernel_route(x: np.ndarray) -> float:
    """The paper's definition: eigenvalues of K / n, K_ij = cosine similarity (scipy's cosine distance is 1 - k)."""
    kernel = 1.0 - cdist(x, x, metric="cosine")
    return exp_entropy(np.linalg.eigvalsh(kernel / len(x)))


def vendi_covariance_route(x: np.ndarray) -> float:
    """The same spectrum from the d x d second-moment matrix of the normalised rows."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return exp_entropy(np.linalg.eigvalsh(unit.T @ unit / len(x)))


@pytest.mark.parametrize("n,d", [(80, 12), (12, 80), (30, 30)], ids=["n>d", "n<d", "n=d"])
def test_equals_both_independent_routes(n: int, d: int) -> None:
    x = np.random.default_rng(n * d).normal(0.5, 1.0, size=(n, d))
    kernel, covariance = vendi_kernel_route(x), vendi_covariance_route(x)
    assert kernel == pytest.approx(covariance, rel=RTOL)  # the two routes of the test agree with each other
    assert vendi_score(x) == pytest.approx(kernel, rel=RTOL)
    assert 1.0 < vendi_score(x) < min(n, d)


def test_limiting_cases() -> None:
    rng = np.random.default_rng(0)
    row = rng.normal(size=(1, 16))
    assert vendi_score(np.repeat(row, 25, axis=0)) == pytest.approx(1.0, abs=1e-12)  # n identical samples
    assert vendi_score(row * rng.uniform(0.1, 9.0, size=(25, 1))) == pytest.approx(1.0, abs=1e-12)  # same direction
    for n, d in ((10, 10), (10, 64)):  # n mutually orthogonal rows (scaled arbitrarily): VS = n
        rows = np.linalg.qr(rng.normal(size=(d, n)))[0].T * rng.uniform(0.5, 3.0, size=(n, 1))
        assert vendi_score(rows) == pytest.approx(float(n), rel=1e-12)
    assert vendi_score(row) == pytest.approx(1.0, abs=1e-12)  # a single sample


def test_zero_and_non_finite_rows_refused() -> None:
    x = np.random.default_rng(1).normal(size=(6, 4))
    x[2] = 0.0
    with pytest.raises(HarnessError, match=r"vendi: 1 feature rows are all zero"):
        vendi_score(x)
    x[2, 1] = np.inf
    with pytest.raises(HarnessError, match=r"vendi: features contain 1 non-finite"):
        vendi_score(x)


@pytest.mark.parametrize("d", [6, 60], ids=["covariance route", "kernel route"])
def test_metric_compute_and_replicates(d: int) -> None:
    metric = get_metric("vendi_mnist")
    x = np.random.default_rng(d).normal(size=(40, d)).astype(np.float32)
    shards = [ShardFeatures(part, (None,) * len(part)) for part in np.array_split(x, 3)]
    result = metric.compute(shards, None)
    assert result.value == pytest.approx(vendi_kernel_route(x.astype(np.float64)), rel=RTOL) and result.n == 40
    idx = bootstrap_indices("cell", 40, 5)
    fast = metric.replicates(x, (None,) * 40, None, idx)
    plain = [vendi_kernel_route(x[i].astype(np.float64)) for i in idx]
    np.testing.assert_allclose(fast, plain, rtol=RTOL)
    assert (fast < result.value).all()  # duplicated rows lower the diversity of every resample


def test_listed_with_source_and_kernel() -> None:
    lines = {line.split()[0]: line for line in metric_lines()}
    for name, reads in (("vendi", "inception-tf1/pool3"), ("vendi_mnist", "mnist-cnn/penultimate")):
        assert f"reads {reads}" in lines[name] and "higher is better, no reference" in lines[name]
        assert "cosine-kernel" in lines[name] and "source Friedman & Dieng 2023" in lines[name]


def entropy_of(weights: np.ndarray, unit: np.ndarray) -> float:
    """H of the weighted second-moment matrix Σ_j w_j x̂_j x̂_jᵀ, by numpy."""
    lam = np.linalg.eigvalsh((unit * weights[:, None]).T @ unit)
    lam = lam[lam > 1e-14]
    return float(-(lam * np.log(lam)).sum())


@pytest.mark.parametrize("n,d", [(60, 8), (8, 60)], ids=["d x d route", "n x n route"])
def test_interval_is_the_delta_method_on_the_entropy(n: int, d: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond the jackknife's budget: each sample's influence equals the derivative of H when weight moves towards
    it (central differences, in the test), and the interval is exp(H ± 1.96·sqrt(Σ IF²)/n), cut at 1."""
    monkeypatch.setattr(vendi, "JACKKNIFE_BUDGET", 0)
    rng = np.random.default_rng(n + d)
    x = np.abs(rng.normal(size=(n, d))) + 0.1 * rng.normal(size=(n, d))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    uniform, eps = np.full(n, 1.0 / n), 1e-6
    influence = []
    for j in range(n):
        towards = np.eye(n)[j] - uniform  # d/dε H((1-ε) M + ε x̂_j x̂_jᵀ)
        influence.append((entropy_of(uniform + eps * towards, unit) - entropy_of(uniform - eps * towards, unit))
                         / (2 * eps))
    influence = np.array(influence)
    result = get_metric("vendi_mnist").compute([ShardFeatures(x, (None,) * n)], None)
    entropy = np.log(result.value)
    assert entropy == pytest.approx(entropy_of(uniform, unit), rel=1e-12)
    half = 1.959963984540054 * np.sqrt((influence**2).sum()) / n
    assert result.ci_high == pytest.approx(np.exp(entropy + half), rel=1e-6)
    assert result.ci_low == pytest.approx(max(1.0, np.exp(entropy - half)), rel=1e-6)
    assert result.ci_low < result.value < result.ci_high and "delta method" in result.details["ci"]


@pytest.mark.parametrize("n,d", [(40, 6), (12, 30)], ids=["d x d route", "n x n route"])
def test_interval_is_the_jackknife_when_affordable(n: int, d: int) -> None:
    """exp(H ± 1.96·SE), SE² = (n-1)/n Σ_j (H_(-j) - mean)², each H_(-j) recomputed here from the rows without j."""
    x = np.random.default_rng(n * d).normal(0.3, 1.0, size=(n, d))
    result = get_metric("vendi_mnist").compute([ShardFeatures(x, (None,) * n)], None)
    loo = np.log([vendi_kernel_route(np.delete(x, j, axis=0)) for j in range(n)])
    se = np.sqrt((n - 1) / n * ((loo - loo.mean()) ** 2).sum())
    entropy = np.log(result.value)
    assert result.ci_high == pytest.approx(np.exp(entropy + 1.959963984540054 * se), rel=1e-9)
    assert result.ci_low == pytest.approx(max(1.0, np.exp(entropy - 1.959963984540054 * se)), rel=1e-9)
    assert "jackknife" in result.details["ci"]


def test_interval_refuses_a_single_sample_and_is_cut_at_one() -> None:
    metric = get_metric("vendi_mnist")
    with pytest.raises(HarnessError, match="vendi_mnist: needs at least 2 samples"):
        metric.compute([ShardFeatures(np.ones((1, 4)), (None,))], None)
    rows = np.array([[1.0, 0.0]] * 19 + [[0.0, 1.0]])  # H = 0.199, half-width 0.281 in log: exp(H - 0.281) < 1
    result = metric.compute([ShardFeatures(rows, (None,) * 20)], None)
    assert result.ci_low == 1.0 < result.value < result.ci_high
