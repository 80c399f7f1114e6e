"""Fixtures of the HPS v2.1 tests (a pytest plugin, see conftest.py): a tiny random open_clip CLIP in ViT-H-14's
layout (same modules and key names, GELU, 224 input, patch 14, the real 49,408-token vocabulary and 77-token context;
small widths and depths) saved as the published ``HPS_v2.1_compressed.pt`` layout (``{'state_dict': ...}``), and
that file installed under the real weights entry for the conformance suites."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import harness.features as loaded_cache
from harness.features.hps import WEIGHTS, WEIGHTS_FILE, HpsV21

# ViT-H-14's config keys (open_clip model_configs/ViT-H-14.json) at toy sizes: 2 heads per tower
TINY_CFG = {"embed_dim": 32,
            "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 14},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def tiny_hps_model(seed: int = 0, cfg: dict | None = None) -> torch.nn.Module:
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(**copy.deepcopy(cfg or TINY_CFG))
    with torch.no_grad():  # wide random projections, so per-sample cosines spread over both signs
        model.text_projection.normal_(0, 64 ** -0.5)
        model.visual.proj.normal_(0, 64 ** -0.5)
    return model.eval()


def save_hps_file(model: torch.nn.Module, path: Path) -> Path:
    """The published layout: the state dict under 'state_dict' (what ``hpsv2.img_score`` loads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def hps_tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    model = tiny_hps_model()
    return {"model": model, "path": save_hps_file(model, tmp_path_factory.mktemp("hps") / WEIGHTS_FILE)}


@pytest.fixture
def hps_installed(hps_tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The tiny file as the ``hps-v2.1`` entry in a private HARNESS_WEIGHTS (no SHA256SUMS: as if fetched by hand),
    the registry's extractor built from the tiny config instead of ViT-H-14's."""
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(loaded_cache, "_LOADED", {})
    monkeypatch.setattr(HpsV21, "_config", lambda self: copy.deepcopy(TINY_CFG))
    (tmp_path / WEIGHTS).mkdir()
    (tmp_path / WEIGHTS / WEIGHTS_FILE).write_bytes(hps_tiny["path"].read_bytes())
    return hps_tiny
