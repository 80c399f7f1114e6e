"""Density and coverage (Naeem et al. 2020) against a brute-force implementation of the paper's formulas, a
hand-worked example of the strict ball membership, limiting cases and the bootstrap fast paths."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from harness.errors import HarnessError
from harness.features import get_extractor
from harness.metrics import get_metric, metric_lines
from harness.metrics.base import ShardFeatures
from harness.metrics.bootstrap import bootstrap_indices
from harness.metrics.density_coverage import K, density_coverage
from harness.references.artefacts import ReferenceFeatures


def brute_force(fake: np.ndarray, real: np.ndarray, k: int) -> tuple[float, float]:
    """The paper's two sums, written out with plain loops over a float64 scipy distance matrix."""
    d_rr, d_rf = cdist(real, real), cdist(real, fake)
    radius = [sorted(d_rr[i])[k] for i in range(len(real))]  # sorted(...)[0] is the row itself
    inside = [[d_rf[i, j] < radius[i] for j in range(len(fake))] for i in range(len(real))]
    density = sum(inside[i][j] for i in range(len(real)) for j in range(len(fake))) / (k * len(fake))
    coverage = sum(any(inside[i]) for i in range(len(real))) / len(real)
    return density, coverage


def mnist_reference(rows: np.ndarray) -> ReferenceFeatures:
    return ReferenceFeatures(rows.astype(np.float32), get_extractor("mnist-cnn").spec.key, "test-ref",
                             {"output": "penultimate"})


@pytest.mark.parametrize("k", [K, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_brute_force_formula(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(90, 16))
    fake = rng.normal(0.2, 1.1, size=(70, 16))
    got = density_coverage(fake, real, k)
    want = brute_force(fake, real, k)
    assert 0.0 < got[1] < 1.0 and got[0] > 0.0  # a case where neither value is at a limit
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_hand_worked_strict_membership() -> None:
    """Real points 0..6 on a line, k = 5: radii 5,4,3,3,3,4,5. A sample at 10 lies in ball 6 only (distance 4 < 5);
    one at 11 sits exactly on ball 6's boundary and counts as outside (strict <, as the authors' package)."""
    real = np.arange(7, dtype=np.float64)[:, None]
    assert density_coverage(np.array([[10.0]]), real, 5) == (pytest.approx(1 / 5, abs=1e-15),
                                                             pytest.approx(1 / 7, abs=1e-15))
    assert density_coverage(np.array([[11.0]]), real, 5) == (0.0, 0.0)
    # the sample at 3 is in every ball: density N/k, the largest value the metric can take
    assert density_coverage(np.array([[3.0]]), real, 5) == (pytest.approx(7 / 5, abs=1e-15), 1.0)


def test_limiting_cases() -> None:
    real = np.random.default_rng(2).normal(size=(60, 8))
    assert density_coverage(real, real)[1] == 1.0  # every real point lies in its own ball
    assert density_coverage(real + 1e3, real) == (0.0, 0.0)  # nothing near the reference


def test_metric_rows_details_and_shards() -> None:
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(50, 10)), rng.normal(size=(45, 10)).astype(np.float32)
    reference = mnist_reference(real)
    shards = [ShardFeatures(part, (None,) * len(part)) for part in np.array_split(fake, 4)]
    density, coverage = brute_force(fake.astype(np.float64), real.astype(np.float32).astype(np.float64), K)
    for name, want in (("density_mnist", density), ("coverage_mnist", coverage)):
        result = get_metric(name).compute(shards, reference)
        assert result.value == pytest.approx(want, abs=1e-12)
        assert result.details["k"] == K and result.n == 45
        assert result.details["density"] == pytest.approx(density, abs=1e-12)
        assert result.details["coverage"] == pytest.approx(coverage, abs=1e-12)


@pytest.mark.parametrize("name", ["density_mnist", "coverage_mnist"])
def test_replicates_equal_brute_force_on_the_resample(name: str) -> None:
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(40, 6)), rng.normal(0.3, 1.0, size=(35, 6))
    reference = mnist_reference(real)
    real64 = reference.features.astype(np.float64)
    idx = bootstrap_indices("cell", len(fake), 6)
    fast = get_metric(name).replicates(fake, (None,) * len(fake), reference, idx)
    which = 1 if name.startswith("coverage") else 0
    plain = [brute_force(fake[i], real64, K)[which] for i in idx]
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-12)


def test_refusals_name_the_problem() -> None:
    real = np.random.default_rng(5).normal(size=(5, 3))
    with pytest.raises(HarnessError, match=r"more than k=5 reference rows for the k-NN radii, got 5"):
        density_coverage(real, real)
    with pytest.raises(HarnessError, match=r"dimensions differ: generated 2, reference 3"):
        density_coverage(real[:, :2], np.vstack([real, real]))
    bad = real.copy()
    bad[0, 0] = np.nan
    with pytest.raises(HarnessError, match="generated features contain 1 non-finite"):
        density_coverage(bad, np.vstack([real, real]))


def test_listed_with_source_and_k() -> None:
    lines = {line.split()[0]: line for line in metric_lines()}
    for name in ("density", "coverage", "density_mnist", "coverage_mnist"):
        assert "reference rows" in lines[name] and f"naeem-k={K}" in lines[name]
        assert "source Naeem et al. 2020" in lines[name]
    assert "reads inception-tf1/pool3" in lines["density"] and "reads mnist-cnn/penultimate" in lines["coverage_mnist"]


def test_consecutive_cells_never_share_memberships() -> None:
    """The one-cell memo is keyed by the generated rows: another cell (or the same rows moved) is recomputed."""
    rng = np.random.default_rng(6)
    real = rng.normal(size=(50, 5))
    reference = mnist_reference(real)
    real64 = reference.features.astype(np.float64)
    metric = get_metric("coverage_mnist")
    for fake in (rng.normal(size=(30, 5)), rng.normal(2.0, 1.0, size=(30, 5)), rng.normal(size=(30, 5))):
        got = metric.compute([ShardFeatures(fake, (None,) * 30)], reference).value
        assert got == pytest.approx(brute_force(fake, real64, K)[1], abs=1e-12)


def test_coverage_interval_is_the_jackknife_normal_interval() -> None:
    """Coverage's own interval: value ± 1.96·SE, SE² = (n-1)/n Σ_j (C_(-j) - mean)², each leave-one-out coverage
    recomputed here by brute force."""
    rng = np.random.default_rng(7)
    real, fake = rng.normal(size=(60, 4)), rng.normal(0.4, 1.0, size=(30, 4))
    reference = mnist_reference(real)
    real64 = reference.features.astype(np.float64)
    shards = [ShardFeatures(fake, (None,) * 30)]
    result = get_metric("coverage_mnist").compute(shards, reference)
    loo = np.array([brute_force(np.delete(fake, j, axis=0), real64, K)[1] for j in range(30)])
    half = 1.959963984540054 * np.sqrt(29 / 30 * ((loo - loo.mean()) ** 2).sum())
    assert half > 0 and result.ci_low == pytest.approx(max(0.0, result.value - half), abs=1e-12)
    assert result.ci_high == pytest.approx(min(1.0, result.value + half), abs=1e-12)
    assert "jackknife" in result.details["ci"]
    for name in ("coverage_mnist", "density_mnist"):
        with pytest.raises(HarnessError, match=f"{name}: needs at least 2 generated samples"):
            get_metric(name).compute([ShardFeatures(fake[:1], (None,))], reference)


def test_density_interval_is_the_normal_interval_of_the_mean() -> None:
    """Density = mean over samples of (balls holding the sample) / k: its interval is value ± 1.96·s/√n of those
    per-sample values (counted here by brute force), cut at 0."""
    rng = np.random.default_rng(9)
    real, fake = rng.normal(size=(60, 4)), rng.normal(0.2, 1.0, size=(30, 4))
    reference = mnist_reference(real)
    real64 = reference.features.astype(np.float64)
    result = get_metric("density_mnist").compute([ShardFeatures(fake, (None,) * 30)], reference)
    per_sample = np.array([brute_force(fake[j:j + 1], real64, K)[0] for j in range(30)])  # M = 1: count / k
    assert result.value == pytest.approx(per_sample.mean(), abs=1e-12)
    half = 1.959963984540054 * per_sample.std(ddof=1) / np.sqrt(30)
    assert half > 0 and result.ci_low == pytest.approx(max(0.0, result.value - half), abs=1e-12)
    assert result.ci_high == pytest.approx(result.value + half, abs=1e-12)
    assert "normal-95" in result.details["ci"]


def test_same_reference_recipe_other_rows_recomputed() -> None:
    """Two references with one reference_id (same extractor, source and n) but other rows: the memo of radii and
    memberships is keyed by the rows, so the second is not scored with the first one's balls."""
    rng = np.random.default_rng(8)
    fake = rng.normal(size=(20, 3))
    metric = get_metric("density_mnist")
    for real in (rng.normal(size=(40, 3)), rng.normal(1.5, 0.5, size=(40, 3))):
        reference = mnist_reference(real)
        got = metric.compute([ShardFeatures(fake, (None,) * 20)], reference).value
        assert got == pytest.approx(brute_force(fake, reference.features.astype(np.float64), K)[0], abs=1e-12)
