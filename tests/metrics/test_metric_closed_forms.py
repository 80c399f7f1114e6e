"""Closed forms, invariances and the bootstrap fast paths (checked against plain recomputation)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.metrics import get_metric
from harness.metrics.base import Metric, ShardFeatures
from harness.metrics.bootstrap import bootstrap_indices, bootstrap_seed, percentile_ci
from harness.metrics.fid import frechet_distance, frechet_replicates
from harness.metrics.inception_score import inception_score
from harness.metrics.kid import kid, poly_kernel
from harness.metrics.precision_recall import precision_recall
from harness.references.artefacts import ReferenceFeatures, ReferenceStats


def _shards(x: np.ndarray, parts: int) -> list[ShardFeatures]:
    return [ShardFeatures(p, (None,) * len(p)) for p in np.array_split(x, parts)]


def test_is_closed_forms():
    assert inception_score(np.zeros((50, 1008)), splits=10)[0] == pytest.approx(1.0, abs=1e-12)
    one_hot = np.tile(np.eye(10) * 60.0, (20, 1))  # balanced, p(y|x) one-hot up to e^-60
    assert inception_score(one_hot, splits=1)[0] == pytest.approx(10.0, rel=1e-12)
    mean, std, scores = inception_score(one_hot, splits=10)
    assert 1.0 < mean <= 10.0 and len(scores) == 10 and std == pytest.approx(scores.std(ddof=0))
    with pytest.raises(HarnessError, match="n >= splits"):
        inception_score(one_hot[:5], splits=10)


def test_is_batch_size_invariance_and_seeded_splits():
    logits = np.random.default_rng(0).normal(0, 3, size=(200, 10))
    metric = get_metric("is_mnist")
    values = {metric.compute(_shards(logits, parts), None).value for parts in (1, 7, 200)}
    assert len(values) == 1  # shard boundaries (batch size) never change the value
    assert "MNIST-CNN proxy" in metric.variant and "not Inception IS" in metric.variant
    # splits=1 needs no shuffle: the score is then exactly invariant to row order
    perm = np.random.default_rng(1).permutation(200)
    assert inception_score(logits[perm], splits=1)[0] == pytest.approx(inception_score(logits, splits=1)[0],
                                                                       rel=1e-12)


def test_is_mnist_on_real_mnist():
    from harness.datasets import get_dataset
    from harness.features import get_extractor

    images = np.concatenate(list(get_dataset("mnist-5k").reference_images(500)))
    ext = get_extractor("mnist-cnn")
    ext.load()
    logits = ext.extract(images)["logits"]
    value = get_metric("is_mnist").compute(_shards(logits, 4), None).value
    assert 8.0 < value < 10.0  # ten well-separated balanced classes: close to, but below, 10


def test_kid_matches_a_plain_loop_and_is_zero_in_expectation():
    rng = np.random.default_rng(2)
    gen, ref = rng.normal(size=(40, 6)), rng.normal(0.5, 1, size=(40, 6))
    value, _, m = kid(gen, ref, subsets=5, subset_size=30, seed=7)
    r = np.random.RandomState(7)
    loop = []
    for _ in range(5):
        x, y = gen[r.choice(40, 30, replace=False)], ref[r.choice(40, 30, replace=False)]
        kxx = np.array([[(a @ b / 6 + 1) ** 3 for b in x] for a in x])
        kyy = np.array([[(a @ b / 6 + 1) ** 3 for b in y] for a in y])
        kxy = np.array([[(a @ b / 6 + 1) ** 3 for b in y] for a in x])
        loop.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (30 * 29) - 2 * kxy.mean())
    assert m == 30 and value == pytest.approx(np.mean(loop), rel=1e-12) and value > 0.01
    a, b = rng.normal(size=(300, 6)), rng.normal(size=(300, 6))
    same, _, _ = kid(a, b, subsets=20, subset_size=200)
    shifted, _, _ = kid(a, b + 0.5, subsets=20, subset_size=200)
    assert abs(same) < 0.05 * shifted  # one distribution: ~0 (unbiased), far below a shifted one


def test_precision_recall_closed_forms():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    assert precision_recall(x, x.copy()) == (1.0, 1.0)
    far = x + 100.0
    assert precision_recall(far, x) == (0.0, 0.0)


def test_bootstrap_contract():
    idx = bootstrap_indices("cellA", 30, 4)
    seed = bootstrap_seed("cellA")
    for b in range(4):
        np.testing.assert_array_equal(idx[b], np.random.default_rng([seed, b]).integers(0, 30, 30))
    assert not np.array_equal(idx, bootstrap_indices("cellB", 30, 4))
    assert percentile_ci(np.arange(101.0)) == (2.5, 97.5)
    with pytest.raises(HarnessError, match="NaN"):
        percentile_ci(np.array([1.0, np.nan]))


def _generic(metric: Metric, x: np.ndarray, reference, idx: np.ndarray) -> np.ndarray:
    return Metric.replicates(metric, x, (None,) * len(x), reference, idx)


@pytest.mark.parametrize("n,d", [(40, 16), (40, 6)])  # m < d (Gram form) and m > d (d x d form)
def test_fid_replicates_equal_recomputation(n, d, monkeypatch):
    rng = np.random.default_rng(4)
    x, ref = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)), rng.normal(0.3, 1.2, size=(200, d))
    mu, sigma = ref.mean(0), np.cov(ref, rowvar=False)
    idx = bootstrap_indices("c", n, 6)
    fast = frechet_replicates(x, mu, sigma, idx)
    plain = [frechet_distance(x[i].mean(0), np.cov(x[i], rowvar=False), mu, sigma)[0] for i in idx]
    np.testing.assert_allclose(fast, plain, rtol=1e-9, atol=1e-9)


def _reference_features(metric: Metric, rows: np.ndarray, monkeypatch) -> ReferenceFeatures:
    from harness.features import get_extractor

    monkeypatch.setattr(type(metric), "extractor", "mnist-cnn")  # a spec that needs no weights file
    return ReferenceFeatures(rows, get_extractor("mnist-cnn").spec.key, "src", {"output": metric.output})


@pytest.mark.parametrize("name", ["kid", "precision", "recall", "is_mnist"])
def test_replicate_fast_paths_equal_recomputation(name, monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(30, 8))
    ref_rows = rng.normal(0.2, 1.0, size=(35, 8)).astype(np.float32).astype(np.float64)  # stored as float32
    metric = get_metric(name)
    reference = _reference_features(metric, ref_rows.astype(np.float32), monkeypatch) \
        if metric.needs_reference else None
    idx = bootstrap_indices("cell", len(x), 5)
    fast = metric.replicates(x, (None,) * len(x), reference, idx)
    if name == "kid":  # the replicate is the full-set U-statistic of the resampled multiset
        plain = []
        for i in idx:
            g = x[i]
            kgg, kgr, krr = poly_kernel(g, g), poly_kernel(g, ref_rows), poly_kernel(ref_rows, ref_rows)
            plain.append((kgg.sum() - np.trace(kgg)) / (30 * 29) + (krr.sum() - np.trace(krr)) / (35 * 34)
                         - 2 * kgr.mean())
    elif name == "recall":  # the generated manifold of the distinct resampled samples
        plain = [precision_recall(x[np.unique(i)], ref_rows)[1] for i in idx]
    else:
        plain = _generic(metric, x.astype(np.float32) if name == "precision" else x, reference, idx)
    np.testing.assert_allclose(fast, plain, rtol=1e-9, atol=1e-12)


def test_fid_reference_kind_checks():
    metric = get_metric("kid")
    with pytest.raises(HarnessError, match="needs ReferenceFeatures"):
        metric.compute(_shards(np.zeros((4, 3)), 1),
                       ReferenceStats(np.zeros(3), np.eye(3), 4, "k", "s", {"output": "pool3"}))


def test_fid_of_a_rank_deficient_set_with_itself_is_zero_never_negative():
    # N=12 << d=512 with pool3-like (ReLU, skewed) features: without a noise floor on the eigenvalues the
    # square roots of ~500 round-off eigenvalues made this about -1e-4
    rng = np.random.default_rng(8)
    x = np.maximum(rng.normal(size=(12, 512)) @ rng.normal(size=(512, 512)) * 0.1, 0)
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    value, details = frechet_distance(mu, sigma, mu, sigma)
    assert 0.0 <= value < 1e-9 and details["eigvals_below_noise_floor"] >= 512 - 11
    other = np.maximum(rng.normal(size=(12, 512)) @ rng.normal(size=(512, 512)) * 0.1, 0)
    assert frechet_distance(mu, sigma, other.mean(0), np.cov(other, rowvar=False))[0] > 1.0


def test_fid_metric_replicates_reuse_the_reference_root(monkeypatch):
    from harness.features import get_extractor

    rng = np.random.default_rng(9)
    x, ref = rng.normal(size=(20, 12)), rng.normal(0.2, 1.0, size=(50, 12))
    metric = get_metric("fid")
    monkeypatch.setattr(type(metric), "extractor", "mnist-cnn")  # a spec that needs no weights file
    stats = ReferenceStats(ref.mean(0), np.cov(ref, rowvar=False), 50, get_extractor("mnist-cnn").spec.key, "s",
                           {"output": "pool3"})
    idx = bootstrap_indices("cell", 20, 4)
    first = metric.replicates(x, (None,) * 20, stats, idx)
    again = metric.replicates(x, (None,) * 20, stats, idx)  # memoised √Σ_ref: the same numbers
    plain = [frechet_distance(x[i].mean(0), np.cov(x[i], rowvar=False), stats.mu, stats.sigma)[0] for i in idx]
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, plain, rtol=1e-9, atol=1e-9)
