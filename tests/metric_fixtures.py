"""Shared fixtures of the metric tests: random Kaiming-initialised Inception weights in torch-fidelity's
format (the real file cannot be downloaded offline) and small image sets with several sizes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.features.inception_tf1 import WEIGHTS_FILE


def write_random_inception_weights(path: Path, seed: int = 0) -> Path:
    """Kaiming-normal convs and 1/sqrt(fan_in) linear: default init collapses features to ~1e-7."""
    from harness.features import inception_tf1

    torch.manual_seed(seed)
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _NoLoad(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):
            return None

    module = _NoLoad("inception-v3-compat", ["2048"],
                     feature_extractor_weights_path=str(inception_tf1._placeholder_state()))
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=1 / math.sqrt(m.in_features))
            torch.nn.init.normal_(m.bias, std=0.1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(module.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def inception_weights_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("weights")
    write_random_inception_weights(directory / WEIGHTS_FILE)
    return directory


@pytest.fixture
def tf1_weights(inception_weights_dir, monkeypatch) -> Path:
    """HARNESS_WEIGHTS pointing at the random weights, for this test only; returns the file."""
    monkeypatch.setenv("HARNESS_WEIGHTS", str(inception_weights_dir))
    return inception_weights_dir / WEIGHTS_FILE


def image_set(seed: int, n: int, size: int, bright: float = 1.0) -> np.ndarray:
    """Smooth random colour images (blurred noise), uint8 (n, size, size, 3)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255 * bright, size=(n, max(2, size // 8), max(2, size // 8), 3))
    x = torch.from_numpy(coarse).permute(0, 3, 1, 2)
    up = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    noise = rng.normal(0, 12, size=(n, 3, size, size))
    return np.clip(up.numpy() + noise, 0, 255).round().astype(np.uint8).transpose(0, 2, 3, 1).copy()
