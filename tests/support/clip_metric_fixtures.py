"""Fixtures of the CLIP metric tests (a pytest plugin, see conftest.py): a tiny random CLIP of the real ViT
architecture saved as an OpenAI-layout file, its scores from transformers' independent CLIP, and the file
installed as both OpenAI CLIP weights entries."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

import harness.features as loaded_cache
from harness.features import weights
from harness.hashing import sha256_file
from tests.support.clip_fixtures import tiny_openclip, to_hf, write_clip_tokenizer

LONG = "a photo of " + "a very large and extremely detailed " * 12 + "tench"  # > 77 tokens
PROMPTS = ["a photo of a tench", "a photo of a crane bird", "a photo of a construction crane", LONG,
           "a photo of a tench", "a photo of a goldfish"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    model = tiny_openclip()
    path = root / "ViT-B-16.pt"
    torch.save(model.state_dict(), path)
    images = np.stack([np.full((256, 256, 3), c, np.uint8) for c in (0, 255, 128, 30, 200, 90)])
    images[3, :, :, 0], images[4, :128] = 255, 0
    images[5] = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    tiny = {"model": model, "path": path, "images": images, "processor": write_clip_tokenizer(root / "proc")}
    return {**tiny, "reference": hf_clip_scores(tiny, PROMPTS)}


@pytest.fixture
def installed(tiny, tmp_path, monkeypatch):
    """The tiny file installed as both OpenAI CLIP entries in a private HARNESS_WEIGHTS (pins swapped to it)."""
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(loaded_cache, "_LOADED", {})
    digest = sha256_file(tiny["path"])
    for name in ("clip-vit-b-16-openai", "clip-vit-l-14-openai"):
        entry = weights.ENTRIES[name]
        file = dataclasses.replace(entry.files[0], sha256=digest)
        monkeypatch.setitem(weights.ENTRIES, name, dataclasses.replace(entry, files=(file,)))
        (tmp_path / name).mkdir()
        (tmp_path / name / file.relative).write_bytes(tiny["path"].read_bytes())
    return tiny


def hf_clip_scores(tiny, prompts):
    """Independent: transformers CLIPModel + CLIPProcessor with the PIL image backend (transformers < 5's
    default, the one the paper ran; v5's torchvision backend moves pixels by one uint8 level)."""
    from transformers import CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    hf = to_hf(tiny["model"])
    processor = CLIPProcessor.from_pretrained(tiny["processor"],
                                              image_processor=CLIPImageProcessorPil.from_pretrained(tiny["processor"]))
    with torch.no_grad():
        pix = processor(images=[Image.fromarray(im) for im in tiny["images"]], return_tensors="pt")["pixel_values"]
        tok = processor(text=prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        img = hf.get_image_features(pixel_values=pix).pooler_output
        txt = hf.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).pooler_output
    return (100 * torch.nn.functional.cosine_similarity(img, txt)).numpy()
