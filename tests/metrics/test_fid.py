"""StreamingStats, the float64-eigh Fréchet distance (vs clean-fid's sqrtm), and the FID metric's guards."""

from __future__ import annotations

import numpy as np
import pytest
from cleanfid.fid import frechet_distance as cleanfid_frechet

from harness.errors import HarnessError
from harness.features import get_extractor
from harness.metrics import get_metric
from harness.metrics.base import ShardFeatures
from harness.metrics.fid import FID, StreamingStats, frechet_distance
from harness.references.artefacts import ReferenceStats

# clean-fid (the comparison oracle) passes scipy's deprecated sqrtm(disp=...) argument
pytestmark = pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")


def _correlated(rng: np.random.Generator, n: int, d: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(n, d)) @ mixing) * scale + shift


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), np.cov(x, rowvar=False)


def test_streaming_stats_match_numpy_for_any_chunking():
    rng = np.random.default_rng(0)
    x = _correlated(rng, 537, 16, shift=1e3)  # large mean: the naive Σxxᵀ − nμμᵀ would lose digits
    mu, cov = _moments(x)
    for cuts in ([537], [1, 2, 534], [100, 200, 237], [300, 237]):
        edges = np.cumsum([0, *cuts])
        parts = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            part = StreamingStats()
            for b in range(lo, hi, 64):  # several updates inside a part, then merge the parts
                part.update(x[b:min(b + 64, hi)])
            parts.append(part)
        total = StreamingStats()
        for part in reversed(parts):  # merge order must not matter
            total.merge(part)
        assert total.n == 537, cuts
        np.testing.assert_allclose(total.mean, mu, rtol=1e-12, err_msg=str(cuts))
        np.testing.assert_allclose(total.cov, cov, rtol=1e-8, atol=1e-10, err_msg=str(cuts))


def test_streaming_stats_accept_float32_and_accumulate_in_float64():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(256, 8)).astype(np.float32)
    s = StreamingStats()
    s.update(x[:100])
    s.update(x[100:])
    assert s.mean.dtype == np.float64 and s.cov.dtype == np.float64
    np.testing.assert_allclose(s.cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10, atol=1e-12)


def test_streaming_stats_merge_equals_single_pass():
    rng = np.random.default_rng(1)
    x = _correlated(rng, 400, 8)
    a, b, whole = StreamingStats(), StreamingStats(), StreamingStats()
    a.update(x[:123])
    b.update(x[123:250])
    b.update(x[250:])
    whole.update(x)
    merged = a.merge(b)
    assert merged.n == whole.n == 400
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(merged.cov, whole.cov, rtol=1e-12, atol=1e-13)


def test_streaming_stats_refuse_bad_input():
    s = StreamingStats()
    s.update(np.zeros((3, 4)))
    with pytest.raises(HarnessError, match="dimension 5"):
        s.update(np.zeros((2, 5)))
    with pytest.raises(HarnessError, match="non-finite"):
        s.update(np.full((1, 4), np.nan))
    with pytest.raises(HarnessError, match="at least 2"):
        one = StreamingStats()
        one.update(np.zeros((1, 4)))
        _ = one.cov


def test_frechet_matches_cleanfid_full_rank():
    rng = np.random.default_rng(2)
    a, b = _correlated(rng, 800, 64), _correlated(rng, 700, 64, shift=0.3, scale=1.4)
    value, details = frechet_distance(*_moments(a), *_moments(b))
    expected = cleanfid_frechet(*_moments(a), *_moments(b))
    assert value == pytest.approx(expected, rel=1e-6)
    assert details["eigvals_clamped"] == 0
    assert details["mean_term"] + details["trace_term"] == pytest.approx(value)


def test_frechet_rank_deficient_reports_clamping():
    rng = np.random.default_rng(3)
    a, b = _correlated(rng, 20, 64), _correlated(rng, 20, 64, shift=0.5)  # N < d: rank ≤ 19
    value, details = frechet_distance(*_moments(a), *_moments(b))
    expected = cleanfid_frechet(*_moments(a), *_moments(b))
    assert value == pytest.approx(expected, rel=1e-5)
    assert details["eigvals_clamped"] > 0  # ~45 zero eigenvalues, round-off makes some negative
    assert details["most_negative_eigval"] < 0
    assert abs(details["most_negative_eigval"]) < 1e-8 * np.trace(np.cov(a, rowvar=False))


def test_frechet_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    value, _ = frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert value == pytest.approx(expected, rel=1e-12)  # 5 + (1 + 1 + 6.25) = 13.25
    assert expected == pytest.approx(13.25)


def test_frechet_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(4)
    mu, sigma = _moments(_correlated(rng, 300, 32))
    value, _ = frechet_distance(mu, sigma, mu, sigma)
    assert abs(value) < 1e-9 * np.trace(sigma)


def test_frechet_rejects_mismatched_shapes():
    with pytest.raises(HarnessError, match="dimensions differ"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def _reference_from(features: np.ndarray, extractor_key: str) -> ReferenceStats:
    mu, sigma = _moments(features)
    return ReferenceStats(mu=mu, sigma=sigma, n=len(features), extractor_key=extractor_key,
                          source_digest="test", spec={"output": "pool3"})


def _shards(x: np.ndarray, size: int) -> list[ShardFeatures]:
    return [ShardFeatures(features=x[i:i + size], labels=(None,) * len(x[i:i + size])) for i in range(0, len(x), size)]


def test_fid_metric_streams_shards_and_is_zero_against_itself():
    key = get_extractor("inception-fid-helper").spec.key  # spec only: no weights loaded
    rng = np.random.default_rng(5)
    x = np.abs(_correlated(rng, 300, 48)).astype(np.float32)
    metric = get_metric("fid")
    assert isinstance(metric, FID) and not metric.higher_is_better and metric.needs_reference
    result = metric.compute(iter(_shards(x, 64)), _reference_from(x.astype(np.float64), key))
    assert result.n == 300 and result.ci_low is None and result.ci_high is None
    assert abs(result.value) < 1e-6
    assert "2048" in result.details["warning"]
    shifted = metric.compute(_shards(x + 1.0, 100), _reference_from(x.astype(np.float64), key))
    assert shifted.value == pytest.approx(48.0, rel=1e-5)  # a pure shift by 1 in 48 dims: ‖Δμ‖² = 48


def test_fid_metric_refuses_foreign_reference_and_tiny_n():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(10, 4))
    metric = get_metric("fid")
    with pytest.raises(HarnessError, match="extractor key"):
        metric.compute(_shards(x, 5), _reference_from(x, "0" * 24))
    key = get_extractor("inception-fid-helper").spec.key
    with pytest.raises(HarnessError, match="at least 2"):
        metric.compute(_shards(x[:1], 5), _reference_from(x, key))
    with pytest.raises(HarnessError, match="ReferenceStats"):
        metric.compute(_shards(x, 5), None)


@pytest.mark.parametrize("n,d,shift", [(2, 16, 0.0), (12, 64, 0.5), (100, 256, -0.2), (255, 256, 0.1)])
def test_gram_route_equals_the_statistics_route_and_cleanfid(n, d, shift):
    from harness.metrics.fid import frechet_distance_gram

    rng = np.random.default_rng(n + d)
    x = np.maximum(_correlated(rng, n, d), 0)  # pool3-like: ReLU'd, skewed
    ref = _correlated(rng, 3 * d, d, shift=shift, scale=1.3)
    mu_r, sigma_r = _moments(ref)
    gram, details = frechet_distance_gram(x, mu_r, sigma_r)
    stats, _ = frechet_distance(*_moments(x), mu_r, sigma_r)
    assert "Gram" in details["method"]
    assert gram == pytest.approx(stats, rel=1e-9, abs=1e-10)
    assert gram == pytest.approx(cleanfid_frechet(*_moments(x), mu_r, sigma_r), rel=1e-6)


def test_gram_route_of_a_rank_deficient_set_with_itself_is_zero_and_refuses_bad_rows():
    from harness.metrics.fid import frechet_distance_gram

    rng = np.random.default_rng(8)
    x = np.maximum(rng.normal(size=(12, 512)) @ rng.normal(size=(512, 512)) * 0.1, 0)
    value, details = frechet_distance_gram(x, *_moments(x))
    assert 0.0 <= value < 1e-9 and details["eigvals_below_noise_floor"] >= 1
    bad = x.copy()
    bad[3, 7] = np.nan
    with pytest.raises(HarnessError, match="non-finite"):
        frechet_distance_gram(bad, *_moments(x))
    with pytest.raises(HarnessError, match="dimensions differ"):
        frechet_distance_gram(x[:, :100], *_moments(x))


def test_fid_metric_takes_the_gram_route_only_below_d_rows():
    key = get_extractor("inception-fid-helper").spec.key
    rng = np.random.default_rng(11)
    ref = _correlated(rng, 400, 48, shift=0.3)
    reference = _reference_from(ref, key)
    metric = get_metric("fid")
    for n, expected in ((47, "Gram"), (48, "eigh(sigma1)"), (90, "eigh(sigma1)")):
        x = np.abs(_correlated(rng, n, 48)).astype(np.float32)
        result = metric.compute(_shards(x, 20), reference)  # shards of 20: the rows cross d=48 mid-stream
        assert expected in result.details["method"], (n, result.details["method"])
        stats, _ = frechet_distance(*_moments(x.astype(np.float64)), reference.mu, reference.sigma)
        assert result.value == pytest.approx(stats, rel=1e-9)


def test_replicates_never_reuse_the_square_root_of_another_sigma_under_the_same_reference_id():
    """Two references that share an id (same extractor, source and n) but not sigma: each cell's replicates
    are computed against its own reference (the √Σ memo was keyed by the id alone)."""
    key = get_extractor("inception-fid-helper").spec.key
    rng = np.random.default_rng(11)
    gen = rng.normal(size=(40, 4))
    first, second = _reference_from(rng.normal(size=(30, 4)), key), _reference_from(3 * rng.normal(size=(30, 4)), key)
    assert first.reference_id == second.reference_id and not np.allclose(first.sigma, second.sigma)
    indices = rng.integers(0, len(gen), size=(5, len(gen)))
    fid = FID()
    fid.replicates(gen, (None,) * len(gen), first, indices)  # fills the memo with first's √Σ
    got = fid.replicates(gen, (None,) * len(gen), second, indices)
    expected = [frechet_distance(*_moments(gen[idx]), second.mu, second.sigma)[0] for idx in indices]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
