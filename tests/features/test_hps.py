"""HPS v2.1 (extractor ``hps-v2.1``, metric ``hps_v21``) on a tiny random ViT-H-14-layout CLIP saved as the published
``HPS_v2.1_compressed.pt`` layout, against the ``hpsv2`` package's own pipeline (its vendored open_clip model,
``preprocess_val`` and tokenizer) on the same file, images and prompts; plus the formula and the refusals."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

import harness.features as loaded_cache
import harness.features.hps as hps
from harness.api.checks import require_for_metrics
from harness.cli.weights import status_lines
from harness.errors import HarnessError
from harness.features import get_extractor
from harness.features.hps import WEIGHTS_FILE, HpsV21
from harness.features.weights import WeightsNotFound, locate
from harness.metrics import ShardFeatures, get_metric, metric_lines
from harness.metrics.text_image import Z_95
from tests.support.hps_fixtures import TINY_CFG, save_hps_file, tiny_hps_model

LONG = "a painting of " + "a very large and extremely detailed " * 12 + "lighthouse"  # > 77 tokens
PROMPTS = ["a photo of a red apple", "an anime girl with blue hair", "a photo of a red apple", LONG,
           "concept art of a castle", "a watercolor painting of a boat"]
# Ours (open_clip 3.3 CLIP, one batched tensor resize, fp32) vs hpsv2's pipeline (its vendored open_clip, one image
# at a time, fp32): the same arithmetic in another order. Measured max |difference| of 100 x cos: 1.5e-5.
ATOL = 1e-4


def _images(height: int, width: int, seed: int) -> np.ndarray:
    """Flat, split, gradient and noise images: downscaling noise is where antialiasing shows."""
    rng = np.random.default_rng(seed)
    images = np.stack([np.full((height, width, 3), c, np.uint8) for c in (10, 240, 128, 60, 200, 90)])
    images[1, :, : width // 2] = (255, 0, 0)
    images[2] = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    images[3:] = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    images[5, : height // 3] = (0, 200, 40)
    return images


@pytest.fixture(scope="module")
def hpsv2_open_clip(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """hpsv2's vendored open_clip, imported by path from a copy (importing ``hpsv2`` itself runs utils.py, which needs
    the absent ``clint``). The wheel ships no BPE file; its tokenizer reads OpenAI's ``bpe_simple_vocab_16e6.txt.gz``,
    which open_clip ships, so the copy gets that file. The tiny config is added to its model configs."""
    source = Path(importlib.util.find_spec("hpsv2").submodule_search_locations[0]) / "src" / "open_clip"
    copy_dir = tmp_path_factory.mktemp("hpsv2_ref") / "hpsv2_open_clip_ref"
    shutil.copytree(source, copy_dir, ignore=shutil.ignore_patterns("__pycache__"))
    bpe = Path(importlib.util.find_spec("open_clip").submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    shutil.copy(bpe, copy_dir)
    (copy_dir / "model_configs" / "HPS-tiny.json").write_text(json.dumps(TINY_CFG))
    spec = importlib.util.spec_from_file_location("hpsv2_open_clip_ref", copy_dir / "__init__.py",
                                                  submodule_search_locations=[str(copy_dir)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["hpsv2_open_clip_ref"] = module  # its relative imports resolve through sys.modules
    spec.loader.exec_module(module)
    return module


def hpsv2_scores(ref: ModuleType, path: Path, images: np.ndarray, prompts: list[str]) -> np.ndarray:
    """``hpsv2.img_score.score`` step by step (model built as its initialize_model does, the file loaded as it does,
    one image and prompt at a time), fp32 instead of CUDA AMP, times 100 (the benchmark's scale)."""
    model, _, preprocess_val = ref.create_model_and_transforms(
        "HPS-tiny", None, precision="fp32", device="cpu", jit=False, force_quick_gelu=False, force_custom_text=False,
        force_patch_dropout=False, force_image_size=None, pretrained_image=False, image_mean=None, image_std=None,
        light_augmentation=True, aug_cfg={}, output_dict=True, with_score_predictor=False,
        with_region_predictor=False)
    model.load_state_dict(torch.load(path, map_location="cpu")["state_dict"])
    tokenizer = ref.get_tokenizer("HPS-tiny")
    model.eval()
    scores = []
    with torch.no_grad():
        for image, prompt in zip(images, prompts, strict=True):
            out = model(preprocess_val(Image.fromarray(image)).unsqueeze(0), tokenizer([prompt]))
            scores.append(float(torch.diagonal(out["image_features"] @ out["text_features"].T)[0]))
    return 100.0 * np.array(scores)


def _ours(path: Path, images: np.ndarray, prompts: list[str], monkeypatch: pytest.MonkeyPatch,
          batch_size: int = 4) -> tuple[np.ndarray, object]:
    """Per-sample scores and the row of ``hps_v21`` with our extractor (explicit file, tiny config)."""
    ext = HpsV21(batch_size=batch_size, weights_path=path, model_cfg=TINY_CFG)
    ext.load()
    feats = ext.extract(images)["image_embeds"]
    monkeypatch.setattr(loaded_cache, "_LOADED", {("hps-v2.1", "cpu"): ext})
    cut = len(images) // 2
    shards = [ShardFeatures(feats[:cut], (None,) * cut, tuple(prompts[:cut])),
              ShardFeatures(feats[cut:], (None,) * (len(images) - cut), tuple(prompts[cut:]))]
    metric = get_metric("hps_v21")
    return metric.sample_scores(shards)[0], metric.compute(shards)


@pytest.mark.parametrize("shape", [(256, 256), (181, 300), (100, 70)], ids=["square-down", "wide-pad", "tall-up"])
def test_matches_hpsv2_pipeline(hps_tiny, hpsv2_open_clip, monkeypatch, shape):
    """Downscaled square images, a wide image (resized, padded 44/45 rows) and a small tall one (upscaled, padded)."""
    images = _images(*shape, seed=sum(shape))
    reference = hpsv2_scores(hpsv2_open_clip, hps_tiny["path"], images, PROMPTS)
    scores, result = _ours(hps_tiny["path"], images, PROMPTS, monkeypatch)
    assert np.ptp(reference) > 5  # distinct per-sample values (100 x cos), so a mix-up would show
    np.testing.assert_allclose(scores, reference, rtol=0, atol=ATOL)
    assert result.value == pytest.approx(reference.mean(), abs=ATOL) and result.n == len(images)
    assert result.details["truncated_prompts"] == 1 and result.details["truncated_samples"] == 1
    assert result.details["hps_version"] == "v2.1"


def test_antialias_choice_is_what_the_reference_computes(hps_tiny, hpsv2_open_clip, monkeypatch):
    """hpsv2 resizes a float tensor with torchvision's default antialias (True since 0.17): without it the
    downscaled noise images score differently, far beyond the tolerance."""
    images = _images(256, 256, seed=512)
    reference = hpsv2_scores(hpsv2_open_clip, hps_tiny["path"], images, PROMPTS)
    monkeypatch.setattr(hps, "ANTIALIAS", False)
    scores, _ = _ours(hps_tiny["path"], images, PROMPTS, monkeypatch)
    assert np.abs(scores - reference).max() > 50 * ATOL


def test_unpadded_side_is_padded_like_a_black_border(hps_tiny, hpsv2_open_clip, monkeypatch):
    """Longer side already 224 but not square: hpsv2 skips its padding (its model then fails); we pad, which equals
    hpsv2 on the same image given a black border by hand (zero fill after ToTensor is uint8 0)."""
    images = _images(150, 224, seed=7)
    bordered = np.zeros((len(images), 224, 224, 3), np.uint8)
    bordered[:, 37:187] = images
    reference = hpsv2_scores(hpsv2_open_clip, hps_tiny["path"], bordered, PROMPTS)
    scores, _ = _ours(hps_tiny["path"], images, PROMPTS, monkeypatch)
    np.testing.assert_allclose(scores, reference, rtol=0, atol=ATOL)


class _FixedText:
    """A stand-in extractor whose text embeddings are fixed unit vectors: the metric's arithmetic alone."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def encode_text(self, prompts: list[str]) -> np.ndarray:
        return np.stack([self.table[p] for p in prompts]).astype(np.float32)

    def truncated(self, prompts: list[str]) -> list[bool]:
        return [False] * len(prompts)


def test_formula_is_mean_of_100_cos_with_normal_interval(monkeypatch):
    rng = np.random.default_rng(3)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    prompts = [f"prompt {k % 4}" for k in range(9)]
    table = {p: unit(rng.normal(size=8)) for p in sorted(set(prompts))}
    images = unit(rng.normal(size=(9, 8)))
    monkeypatch.setattr(loaded_cache, "_LOADED", {("hps-v2.1", "cpu"): _FixedText(table)})
    shards = [ShardFeatures(images[:4], (None,) * 4, tuple(prompts[:4])),
              ShardFeatures(images[4:], (None,) * 5, tuple(prompts[4:]))]
    metric = get_metric("hps_v21")
    result = metric.compute(shards)
    cos = np.array([np.dot(images[k], table[p]) / np.linalg.norm(images[k]) / np.linalg.norm(table[p])
                    for k, p in enumerate(prompts)])
    half = Z_95 * np.std(100 * cos, ddof=1) / 3.0
    assert result.value == pytest.approx(100 * cos.mean(), abs=1e-5)
    assert (result.ci_low, result.ci_high) == pytest.approx((result.value - half, result.value + half), abs=1e-5)
    indices = np.random.default_rng(0).integers(0, 9, (5, 9))
    np.testing.assert_allclose(metric.shard_replicates(shards, None, indices),
                               [100 * cos[idx].mean() for idx in indices], atol=1e-5)


def test_refusals_name_the_file(hps_tiny, tmp_path):
    def load(path: Path, cfg: dict | None = TINY_CFG) -> None:
        HpsV21(weights_path=path, model_cfg=cfg).load()

    state = hps_tiny["model"].state_dict()
    torch.save(state, bare := tmp_path / "bare.pt")  # a plain state dict, not the published layout
    with pytest.raises(HarnessError, match=rf"{bare}: expected a checkpoint dict with a 'state_dict' entry"):
        load(bare)
    (junk := tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(HarnessError, match=rf"{junk}: not a torch checkpoint"):
        load(junk)
    keys = {k: v for k, v in state.items() if k != "visual.ln_post.weight"} | {"score_predictor.w": torch.ones(1)}
    torch.save({"state_dict": keys}, wrong_keys := tmp_path / "keys.pt")
    with pytest.raises(HarnessError, match=rf"{wrong_keys}: 'state_dict' does not fit open_clip model config: 1 "
                                           r"missing keys \(first: visual.ln_post.weight\); 1 unexpected keys"):
        load(wrong_keys)
    narrow = copy.deepcopy(TINY_CFG) | {"embed_dim": 16}
    shapes = save_hps_file(tiny_hps_model(cfg=narrow), tmp_path / "shapes.pt")
    with pytest.raises(HarnessError, match=rf"{shapes}: .*2 keys of another shape \(first: text_projection"):
        load(shapes)
    # the real ViT-H-14 (built uninitialised, no download): the tiny file lacks its deeper blocks and is narrower,
    # but names no key the real layout lacks
    with pytest.raises(HarnessError, match=rf"{hps_tiny['path']}: 'state_dict' does not fit open_clip ViT-H-14: "
                                           r"\d+ missing keys .*keys of another shape") as err:
        load(hps_tiny["path"], cfg=None)
    assert "unexpected" not in str(err.value)


def test_weights_gated(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(loaded_cache, "_LOADED", {})
    gated = r"not computed: weights not found \(harness weights fetch hps-v2.1\); needs HPS_v2.1_compressed.pt in"
    with pytest.raises(WeightsNotFound, match=gated):
        get_extractor("hps-v2.1").load()
    with pytest.raises(WeightsNotFound, match=r"metric 'hps_v21' \(extractor 'hps-v2.1'\): " + gated):
        require_for_metrics(["hps_v21"])
    with pytest.raises(WeightsNotFound, match=gated):  # never a number: the metric cannot load its extractor
        get_metric("hps_v21").compute([ShardFeatures(np.eye(2, dtype=np.float32), (None, None), ("a", "b"))])
    assert any(line.startswith("hps-v2.1") and "MISSING (harness weights fetch hps-v2.1)" in line
               for line in status_lines())
    # where hpsv2's own hf_hub_download leaves the file
    snapshot = tmp_path / "hub" / "models--xswu--HPSv2" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / WEIGHTS_FILE).write_bytes(b"x")
    assert locate("hps-v2.1") == snapshot


def test_spec_follows_the_file_and_recorded_digest(hps_installed, tmp_path):
    """The entry pins no digest (trust on first fetch), so the spec hashes the file: other bytes, another key; a
    digest recorded in SHA256SUMS is enforced."""
    ext = get_extractor("hps-v2.1")
    before = ext.spec
    assert "antialias=True" in before.resize and before.weights_sha256
    assert HpsV21(model_cfg=TINY_CFG).spec.numerics != before.numerics  # a model config is in the spec
    ext.load()
    assert ext.extract(_images(64, 64, seed=1)[:2])["image_embeds"].shape == (2, TINY_CFG["embed_dim"])
    folder = tmp_path / "hps-v2.1"
    save_hps_file(tiny_hps_model(seed=5), folder / WEIGHTS_FILE)
    assert get_extractor("hps-v2.1").spec.key != before.key
    (folder / "SHA256SUMS").write_text("0" * 64 + f"  {WEIGHTS_FILE}\n")
    with pytest.raises(HarnessError, match=rf"{WEIGHTS_FILE}: sha256 .* does not match the expected 0000"):
        get_extractor("hps-v2.1").load()


def test_listed_with_source_and_requires_prompts():
    line = next(line for line in metric_lines() if line.startswith("hps_v21 "))
    assert "reads hps-v2.1/image_embeds" in line and "source Wu et al. 2023" in line and "v2.1" in line
    assert get_metric("hps_v21").requires == frozenset({"prompts"})
    with pytest.raises(HarnessError, match="shard 0 sample 1 has no prompt"):
        get_metric("hps_v21").compute([ShardFeatures(np.eye(2, dtype=np.float32), (None, None), ("a", None))])
