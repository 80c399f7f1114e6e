"""Certification against the peer libraries on identical images and identical (random Kaiming) weights.

torch-fidelity's ``calculate_metrics`` computes FID, IS, KID and precision/recall from the images with
its own data path; we compute them from our extractor's features with our metric code. Images are
48x48 and 64x64 (not 299), so the TF1 resize runs on both sides.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.features import get_extractor
from harness.metrics import get_metric
from harness.metrics.base import ShardFeatures
from harness.metrics.fid import frechet_distance
from harness.references.artefacts import ReferenceFeatures, ReferenceStats
from tests.support.metric_fixtures import image_set, use_inception_weights

N = 16


class _Uint8Chw(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.images[i]).permute(2, 0, 1).contiguous()


@pytest.fixture(scope="module")
def certified(inception_weights_dir):
    import torch_fidelity

    gen = np.concatenate([image_set(1, N // 2, 48), image_set(2, N // 2, 64)[:, 8:56, 8:56]])
    ref = image_set(3, N, 48, bright=0.8)
    with pytest.MonkeyPatch.context() as mp:
        weights_file = use_inception_weights(mp, inception_weights_dir)
        ext = get_extractor("inception-tf1")
        ext.load()
        ours = {"gen": ext.extract(gen), "ref": ext.extract(ref), "key": ext.spec.key}
        theirs = torch_fidelity.calculate_metrics(
            input1=_Uint8Chw(gen), input2=_Uint8Chw(ref), cuda=False, isc=True, fid=True, kid=True, prc=True,
            feature_extractor="inception-v3-compat",
            feature_extractor_weights_path=str(weights_file),
            kid_subset_size=N, cache=False, save_cpu_ram=True, verbose=False)
        yield ours, theirs


def _score(name: str, ours: dict) -> object:
    metric = get_metric(name)
    ref_rows = ours["ref"][metric.output]
    spec = {"output": metric.output}
    if metric.reference_kind == "features":
        reference = ReferenceFeatures(ref_rows, ours["key"], "test-ref", spec)
    else:
        reference = ReferenceStats(ref_rows.astype(np.float64).mean(0), np.cov(ref_rows.astype(np.float64),
                                   rowvar=False), len(ref_rows), ours["key"], "test-ref", spec)
    shards = [ShardFeatures(part, (None,) * len(part)) for part in np.array_split(ours["gen"][metric.output], 3)]
    return metric.compute(shards, reference if metric.needs_reference else None)


def test_fid_equals_torch_fidelity(certified, inception_weights_dir, monkeypatch):
    use_inception_weights(monkeypatch, inception_weights_dir)
    ours, theirs = certified
    value = _score("fid_tf1", ours).value
    assert value > 1.0  # different image sets: a real distance, not a degenerate 0
    assert value == pytest.approx(theirs["frechet_inception_distance"], rel=1e-5)


@pytest.mark.parametrize("dims", [8, 2048])
def test_fid_equals_cleanfid_on_identical_features(certified, dims):
    from cleanfid.fid import frechet_distance as cleanfid_frechet

    ours, _ = certified
    g, r = (ours[side]["pool3"][:, :dims].astype(np.float64) for side in ("gen", "ref"))
    stats = (g.mean(0), np.cov(g, rowvar=False), r.mean(0), np.cov(r, rowvar=False))
    value, _ = frechet_distance(*stats)
    # full rank (d=8 < n): <= 1e-6 abs. At d=2048 > n the product is singular and scipy's sqrtm (which
    # clean-fid calls) warns that its result may be inaccurate: measured ~1.2e-6 off, so 1e-5 there.
    assert abs(value - cleanfid_frechet(*stats)) <= (1e-6 if dims < N else 1e-5)


def test_is_equals_torch_fidelity(certified):
    ours, theirs = certified
    result = _score("is", ours)
    assert result.value == pytest.approx(theirs["inception_score_mean"], rel=1e-9)
    assert result.details["std"] == pytest.approx(theirs["inception_score_std"], rel=1e-7, abs=1e-12)
    assert result.details["std_ddof"] == 0


def test_kid_equals_torch_fidelity(certified, inception_weights_dir, monkeypatch):
    from torch_fidelity.metric_kid import kid_features_to_metric

    use_inception_weights(monkeypatch, inception_weights_dir)
    ours, theirs = certified
    result = _score("kid", ours)
    assert result.details["subset_size"] == N
    # torch-fidelity sums float32 kernels: agreement to its rounding ...
    assert result.value == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4, abs=1e-6)
    # ... and exactly its algorithm when it is handed float64 features
    exact = kid_features_to_metric(torch.from_numpy(ours["gen"]["pool3"].astype(np.float64)),
                                   torch.from_numpy(ours["ref"]["pool3"].astype(np.float64)),
                                   kid_subsets=100, kid_subset_size=N, rng_seed=2020, verbose=False,
                                   kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                   kid_kernel_poly_coef0=1)
    assert result.value == pytest.approx(exact["kernel_inception_distance_mean"], rel=1e-10)


def test_precision_recall_equal_torch_fidelity(certified, inception_weights_dir, monkeypatch):
    use_inception_weights(monkeypatch, inception_weights_dir)
    ours, theirs = certified
    assert _score("precision", ours).value == pytest.approx(theirs["precision"], abs=1e-12)
    assert _score("recall", ours).value == pytest.approx(theirs["recall"], abs=1e-12)
