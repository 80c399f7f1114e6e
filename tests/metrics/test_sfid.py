"""sFID: the spatial features are ADM's ``mixed_6/conv[..., :7]`` of the packaged Inception (checked against the
TorchScript's own blocks), and the metric is the Fréchet distance on them (checked against scipy's sqrtm)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from harness.features import get_extractor, loaded_extractor
from harness.features.base import fixed_threads
from harness.features.inception_fid_helper import to_network_input
from harness.features.inception_fid_helper_spatial import CHANNELS, SPATIAL_DIM, mixed_6_conv
from harness.metrics import get_metric, metric_lines
from harness.metrics.base import ShardFeatures
from harness.references.artefacts import ReferenceStats
from tests.support.metric_fixtures import image_set


def through(layers: torch.nn.Module, x: torch.Tensor, stop: str | None) -> torch.Tensor:
    """The TorchScript's blocks applied whole, in order, up to (not including) ``stop``."""
    for name, block in layers.named_children():
        if name == stop:
            break
        x = block(x)
    return x


@pytest.fixture(scope="module")
def spatial():
    return loaded_extractor("inception-fid-helper-spatial", "cpu")


def test_spatial_features_are_the_first_7_channels_of_mixed_6_conv(spatial) -> None:
    images = image_set(0, 2, 64)
    got = spatial.extract(images)["mixed_6_conv"]
    assert SPATIAL_DIM == 2023 and got.shape == (2, 2023) and got.dtype == np.float32
    layers = spatial._net.net.layers
    # at the spec's thread count, as extract() runs: oneDNN's float32 sums differ by ~3e-6 between counts
    with torch.inference_mode(), fixed_threads(spatial.spec.cpu_threads):  # mixed_6's 1x1 "conv" branch is first
        whole = layers.mixed_6(through(layers, to_network_input(torch.from_numpy(images)), "mixed_6"))
    assert whole.shape == (2, 768, 17, 17)
    want = whole[:, :CHANNELS].permute(0, 2, 3, 1).reshape(2, -1).numpy()  # ADM: NHWC, [..., :7], flattened
    np.testing.assert_array_equal(got, want)
    assert (got >= 0).all() and (got > 0).any()  # a ReLU output


def test_the_block_walk_is_the_networks_own_path(spatial) -> None:
    """Walking ``layers`` block by block to the end reproduces the TorchScript's pool3 bit for bit, so the walk
    that stops at mixed_6 sees the same activations the full network computes."""
    with torch.inference_mode():
        x = to_network_input(torch.from_numpy(image_set(1, 2, 48)))
        walked = through(spatial._net.net.layers, x, None).reshape(-1, 2048)
        np.testing.assert_array_equal(walked.numpy(), spatial._net(x).numpy())
        assert mixed_6_conv(spatial._net.net.layers, x).shape == (2, 192, 17, 17)


def test_spec_differs_from_pool3_extractor_and_shares_its_weights() -> None:
    spatial, pool3 = get_extractor("inception-fid-helper-spatial").spec, get_extractor("inception-fid-helper").spec
    assert spatial.key != pool3.key and spatial.weights_sha256 == pool3.weights_sha256
    assert "mixed_6/conv" in spatial.layer and "2023" in spatial.layer and spatial.resize == pool3.resize


def frechet_scipy(x: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """ADM's/pytorch-fid's formula: ‖μ1-μ2‖² + Tr(Σ1 + Σ2 - 2 sqrtm(Σ1 Σ2)), unbiased covariance."""
    mu1, sigma1 = x.mean(0), np.cov(x, rowvar=False)
    covmean = linalg.sqrtm(sigma1 @ sigma)
    return float(((mu1 - mu) ** 2).sum() + np.trace(sigma1 + sigma - 2 * covmean.real))


def test_sfid_is_the_frechet_distance_of_its_features(monkeypatch) -> None:
    metric = get_metric("sfid")
    assert metric.extractor == "inception-fid-helper-spatial" and metric.output == "mixed_6_conv"
    rng = np.random.default_rng(2)
    x, ref = rng.normal(size=(120, 24)), rng.normal(0.3, 1.2, size=(200, 24))
    stats = ReferenceStats(ref.mean(0), np.cov(ref, rowvar=False), 200,
                           get_extractor("inception-fid-helper-spatial").spec.key, "test-ref",
                           {"output": "mixed_6_conv"})
    shards = [ShardFeatures(part, (None,) * len(part)) for part in np.array_split(x, 3)]
    result = metric.compute(shards, stats)
    assert result.value == pytest.approx(frechet_scipy(x, stats.mu, stats.sigma), rel=1e-9)
    assert "warning" in result.details and "2023" in result.details["warning"]  # n = 120 < 2023 features


def test_listed_with_source() -> None:
    line = {line.split()[0]: line for line in metric_lines()}["sfid"]
    assert "reads inception-fid-helper-spatial/mixed_6_conv" in line and "reference statistics" in line
    assert "lower is better" in line and "source Nash et al. 2021" in line and "2023" in line
