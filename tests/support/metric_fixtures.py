"""Shared fixtures of the metric tests: random Kaiming-initialised Inception weights in torch-fidelity's
format (the real file cannot be downloaded offline), installed under the real entry name with the entry's
pin swapped to their digest, and small image sets with several sizes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.features import weights
from harness.features.inception_tf1 import WEIGHTS_ENTRY, WEIGHTS_FILE
from harness.hashing import sha256_file


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


def use_inception_weights(mp: pytest.MonkeyPatch, weights_home: Path) -> Path:
    """HARNESS_WEIGHTS -> ``weights_home`` and the inception-tf1 pin -> the digest of the file found there."""
    path = weights_home / WEIGHTS_ENTRY / WEIGHTS_FILE
    mp.setenv("HARNESS_WEIGHTS", str(weights_home))
    entry = weights.ENTRIES[WEIGHTS_ENTRY]
    mp.setitem(weights.ENTRIES, WEIGHTS_ENTRY, entry.with_pins({WEIGHTS_FILE: sha256_file(path)}))
    return path


@pytest.fixture(scope="session")
def inception_weights_dir(tmp_path_factory) -> Path:
    """A HARNESS_WEIGHTS folder holding random weights as ``inception-tf1/<the release file name>``."""
    directory = tmp_path_factory.mktemp("weights")
    write_random_inception_weights(directory / WEIGHTS_ENTRY / WEIGHTS_FILE)
    return directory


@pytest.fixture
def tf1_weights(inception_weights_dir, monkeypatch) -> Path:
    """The random weights installed (see ``use_inception_weights``) for this test only; returns the file."""
    return use_inception_weights(monkeypatch, inception_weights_dir)


def image_set(seed: int, n: int, size: int, bright: float = 1.0) -> np.ndarray:
    """Smooth random colour images (blurred noise), uint8 (n, size, size, 3)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255 * bright, size=(n, max(2, size // 8), max(2, size // 8), 3))
    x = torch.from_numpy(coarse).permute(0, 3, 1, 2)
    up = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    noise = rng.normal(0, 12, size=(n, 3, size, size))
    return np.clip(up.numpy() + noise, 0, 255).round().astype(np.uint8).transpose(0, 2, 3, 1).copy()
