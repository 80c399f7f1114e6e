"""Tests run offline by construction: hub access disabled, private caches in a temp dir."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

_PRIVATE = Path(tempfile.mkdtemp(prefix="onestep-bench-tests-"))
for key, value in {
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg",
    "TORCH_HOME": str(_PRIVATE / "torch"), "HF_HOME": str(_PRIVATE / "hf"),
    "HARNESS_CACHE": str(_PRIVATE / "harness-cache"), "HARNESS_PROGRESS": "0",
}.items():
    os.environ[key] = value

import harness.datasets as harness_datasets  # noqa: E402 - only after the offline environment is set

REPO = Path(__file__).resolve().parent.parent

# fixtures shared by the metric tests (random Inception weights in torch-fidelity format, image sets)
pytest_plugins = ["tests.support.metric_fixtures", "tests.support.clip_metric_fixtures",
                  "tests.support.hps_fixtures",
                  "tests.support.imagereward_fixtures"]


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_PRIVATE, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_cache() -> Path:
    """The session-wide feature/reference cache (content-addressed, so sharing it is safe)."""
    return Path(os.environ["HARNESS_CACHE"])


@pytest.fixture()
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """No data location of any kind: the state of a fresh offline machine."""
    for name in list(os.environ):
        if name == "HARNESS_DATA" or name.startswith("HARNESS_DATASET_"):
            monkeypatch.delenv(name)


class FakeImageNet(harness_datasets.Dataset):
    """Planning needs only the class count and a digest; no images are read."""

    num_classes = 1000

    @property
    def digest(self) -> str:
        return "test-imagenet-1000"

    @property
    def size(self) -> int:
        return 50_000

    def reference_images(self, n: int, batch_size: int = 256, start: int = 0) -> Iterator[np.ndarray]:
        raise AssertionError("planning must not read reference images")


@pytest.fixture()
def fake_imagenet(monkeypatch: pytest.MonkeyPatch) -> str:
    """A registered 1000-class dataset 'test-imagenet' that plans without files; returns its id."""
    monkeypatch.setitem(harness_datasets.base._DATASETS, "test-imagenet", FakeImageNet)
    monkeypatch.setattr(FakeImageNet, "id", "test-imagenet", raising=False)
    return "test-imagenet"
