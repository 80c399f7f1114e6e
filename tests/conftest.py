"""Tests run offline by construction: hub access disabled, private caches in a temp dir."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_PRIVATE = Path(tempfile.mkdtemp(prefix="onestep-bench-tests-"))
for key, value in {
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg",
    "TORCH_HOME": str(_PRIVATE / "torch"), "HF_HOME": str(_PRIVATE / "hf"),
    "HARNESS_CACHE": str(_PRIVATE / "harness-cache"), "HARNESS_PROGRESS": "0",
}.items():
    os.environ[key] = value

REPO = Path(__file__).resolve().parent.parent

# fixtures shared by the metric tests (random Inception weights in torch-fidelity format, image sets)
pytest_plugins = ["metric_fixtures"]


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_PRIVATE, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_cache() -> Path:
    """The session-wide feature/reference cache (content-addressed, so sharing it is safe)."""
    return Path(os.environ["HARNESS_CACHE"])
