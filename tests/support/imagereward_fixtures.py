"""A tiny random ImageReward in the published layout, built and scored by the reference package's own code.

``image-reward==1.5`` (requirements-nodeps.txt, test-only) is imported module by module: its package ``__init__``
pulls in CLIP, diffusers and the hub. Under transformers 5 its BLIP text encoder (``med.py``) needs shims for names
transformers moved or dropped, none of which changes a number: ``apply_chunking_to_forward`` and friends
(moved to ``transformers.pytorch_utils``; med.py only calls the first, which runs the feed-forward whole when
chunking is off), ``init_weights`` (random weights are set here), ``get_head_mask`` (no head mask: a None per
layer) and ``invert_attention_mask`` (its image mask is all ones: zeros either way). ``fairscale`` (activation
checkpointing in vit.py, off at inference) is a stub.

The tiny model keeps the published shapes where the reference hard-codes them (the 768-wide BERT its MLP(768)
head reads, 12 heads of 64) and shrinks the rest: a 224px ViT of width 128 (2 heads of 64, depth 2, patch 16), two
BERT layers with a 64-wide feed-forward, a WordPiece vocabulary of a few words.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import math
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import harness.features as loaded_cache

WORDS = ("a", "an", "the", "photo", "of", "red", "blue", "cat", "dog", "on", "mat", "two", "circle", "##s", "square",
         "small", "boat", "at", "sea", "empty", "room", "very", "large", "shark", ".", ",")
SPECIALS = ("[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
VISION_WIDTH, VISION_DEPTH, VISION_HEADS = 128, 2, 2
MED_CONFIG = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
              "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 64,
              "layer_norm_eps": 1e-12, "max_position_embeddings": 40, "model_type": "bert", "num_attention_heads": 12,
              "num_hidden_layers": 2, "pad_token_id": 0, "type_vocab_size": 2,
              "vocab_size": len(SPECIALS) + len(WORDS) + 2,  # + BLIP's [DEC] and [ENC], as 30522 + 2 = 30524
              "encoder_width": VISION_WIDTH, "add_cross_attention": True}


@contextlib.contextmanager
def _shimmed() -> Iterator[None]:
    """Stub packages and moved transformers names, present only while the reference modules are imported."""
    import transformers.modeling_utils as modeling_utils
    import transformers.pytorch_utils as pytorch_utils

    root = importlib.util.find_spec("ImageReward").submodule_search_locations[0]
    before = set(sys.modules)
    for name, sub in (("ImageReward", ""), ("ImageReward.models", "/models"),
                      ("ImageReward.models.BLIP", "/models/BLIP")):
        package = types.ModuleType(name)  # the path only: the real __init__ files import CLIP, diffusers, the hub
        package.__path__ = [root + sub]
        sys.modules[name] = package
    stub = "fairscale.nn.checkpoint.checkpoint_activations"
    for name in ("fairscale", "fairscale.nn", "fairscale.nn.checkpoint", stub):
        sys.modules[name] = types.ModuleType(name)
    sys.modules[stub].checkpoint_wrapper = lambda module: module
    added = [n for n in ("apply_chunking_to_forward", "find_pruneable_heads_and_indices", "prune_linear_layer")
             if not hasattr(modeling_utils, n)]
    for name in added:
        setattr(modeling_utils, name, getattr(pytorch_utils, name, None))
    try:
        yield
    finally:
        for name in added:
            delattr(modeling_utils, name)
        for name in set(sys.modules) - before:
            if name.startswith("fairscale"):
                del sys.modules[name]


_MODULES: dict[str, Any] = {}


def reference_modules() -> dict[str, Any]:
    """{'vit', 'med', 'blip_pretrain', 'image_reward'}: the reference package's modules, imported once."""
    if not _MODULES:
        with _shimmed(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # vit.py's timm import paths are deprecated aliases
            for key, name in (("vit", "models.BLIP.vit"), ("med", "models.BLIP.med"),
                              ("blip_pretrain", "models.BLIP.blip_pretrain"), ("image_reward", "ImageReward")):
                _MODULES[key] = importlib.import_module(f"ImageReward.{name}")
        bert = _MODULES["med"].BertModel
        bert.init_weights = lambda self: None
        bert.get_head_mask = lambda self, head_mask, layers: [None] * layers
        bert.invert_attention_mask = lambda self, mask: (1.0 - mask[:, None, None, :].to(self.dtype)) * \
            torch.finfo(self.dtype).min
    return _MODULES


def write_tokenizer(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("".join(f"{w}\n" for w in (*SPECIALS, *WORDS)))
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    return folder


def blip_tokenizer(folder: Path) -> Any:
    """What the reference's init_tokenizer builds (bert-base-uncased + [DEC] bos + [ENC]), from the tiny folder."""
    from transformers import BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(str(folder))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random at a scale that keeps activations O(1), so each layer moves the reward."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim == 1:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * noise)  # norms around 1, biases around 0
            elif "embed" in name or "token" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / math.sqrt(p[0].numel()))


def build_tiny(root: Path, seed: int = 0) -> Any:
    """Write ``root/imagereward-v1.0/{ImageReward.pt, med_config.json}`` and ``root/bert-base-uncased-tokenizer``;
    return the reference ``ImageReward`` model (eval mode) they hold."""
    mods = reference_modules()
    model_dir, tokenizer_dir = root / "imagereward-v1.0", write_tokenizer(root / "bert-base-uncased-tokenizer")
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "med_config.json").write_text(json.dumps(MED_CONFIG))

    def tiny_vit(*args: Any, **kwargs: Any) -> tuple[torch.nn.Module, int]:
        return mods["vit"].VisionTransformer(img_size=224, patch_size=16, embed_dim=VISION_WIDTH, depth=VISION_DEPTH,
                                             num_heads=VISION_HEADS), VISION_WIDTH

    blip = mods["blip_pretrain"]
    saved = blip.create_vit, blip.init_tokenizer
    blip.create_vit, blip.init_tokenizer = tiny_vit, lambda: blip_tokenizer(tokenizer_dir)
    try:
        torch.manual_seed(seed)
        model = mods["image_reward"].ImageReward(med_config=str(model_dir / "med_config.json"), device="cpu")
    finally:
        blip.create_vit, blip.init_tokenizer = saved
    _randomise(model, seed)
    torch.save(model.state_dict(), model_dir / "ImageReward.pt")
    return model.eval()


def reference_rewards(model: Any, images: np.ndarray, prompts: list[str]) -> np.ndarray:
    """The reference package's ``ImageReward.score(prompt, PIL image)``, one pair at a time."""
    with torch.no_grad():
        return np.array([model.score(p, Image.fromarray(im)) for im, p in zip(images, prompts, strict=True)])


@pytest.fixture(scope="session")
def imagereward_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("imagereward-weights")
    return {"root": root, "reference": build_tiny(root)}


@pytest.fixture
def imagereward_installed(imagereward_files: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The tiny model as both ImageReward weights entries in a private HARNESS_WEIGHTS (no digest recorded)."""
    monkeypatch.setenv("HARNESS_WEIGHTS", str(imagereward_files["root"]))
    monkeypatch.setattr(loaded_cache, "_LOADED", {})
    return imagereward_files
