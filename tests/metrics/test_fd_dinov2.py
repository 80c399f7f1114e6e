"""FD-DINOv2 on a tiny random DINOv2 of the real architecture, saved as a facebook/dinov2-* folder (transformers
4 key names, as the hub ships them), against an independent pipeline: timm's ViT (the release's own layout:
fused qkv, LayerScale gammas) fed dgm-eval's torchvision transform, with the position embeddings resampled by
the DINOv2 release's rule written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import harness.features as loaded_cache
from harness.errors import HarnessError
from harness.features import get_extractor
from harness.features.dinov2 import Dinov2VitL14
from harness.features.weights import WeightsNotFound
from harness.metrics import ShardFeatures, get_metric
from harness.metrics.fid import frechet_distance
from harness.references.artefacts import ReferenceStats

WIDTH, DEPTH, HEADS, PATCH, TRAINED = 32, 2, 2, 14, 70  # trained at 70 px: a 5 x 5 grid, resampled to 16 x 16
LEGACY = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
          "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense"}


def _tiny_state() -> tuple[object, dict[str, torch.Tensor]]:
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS, mlp_ratio=2,
                          patch_size=PATCH, image_size=TRAINED)
    torch.manual_seed(0)
    state = Dinov2Model(config).state_dict()
    with torch.no_grad():  # every tensor random (LayerScale and LayerNorm too), so a dropped one would show
        state = {k: torch.randn_like(v) * (0.3 if v.ndim > 1 else 0.5) + (1.0 if "norm" in k and "weight" in k
                                                                             else 0.0) for k, v in state.items()}
    return config, state


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from safetensors.torch import save_file

    config, state = _tiny_state()
    folder = tmp_path_factory.mktemp("dinov2") / "dinov2-vit-l-14"
    config.save_pretrained(folder)
    legacy = {}
    for key, value in state.items():
        for new, old in LEGACY.items():
            key = key.replace(new, old)
        legacy[key] = value.contiguous()
    save_file(legacy, folder / "model.safetensors", metadata={"format": "pt"})
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 90, 130, 3), dtype=np.uint8)  # non-square: the squash must not crop
    images[1, :, :60] = (250, 10, 10)
    return {"folder": folder, "state": state, "images": images}


def _release_resample(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """The DINOv2 release's interpolate_pos_encoding (interpolate_offset 0.1, antialias off), for a square input."""
    m = int(math.sqrt(pos.shape[1] - 1))
    patches = pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
    s = (grid + 0.1) / m
    patches = torch.nn.functional.interpolate(patches, scale_factor=(s, s), mode="bicubic", antialias=False)
    return torch.cat([pos[:, :1], patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


def _timm_reference(state: dict[str, torch.Tensor], images: np.ndarray) -> np.ndarray:
    """dgm-eval's DINOv2 encoder, rebuilt on timm's ViT: torchvision Resize((224, 224), BICUBIC) on PIL, ToTensor,
    ImageNet Normalize; the normalised class token of forward_features."""
    import timm.models.vision_transformer as vit
    import torchvision.transforms as T

    model = vit.VisionTransformer(img_size=224, patch_size=PATCH, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS,
                                  mlp_ratio=2, qkv_bias=True, init_values=1.0, num_classes=0).eval()
    new = {"cls_token": state["embeddings.cls_token"],
           "pos_embed": _release_resample(state["embeddings.position_embeddings"], 224 // PATCH),
           "patch_embed.proj.weight": state["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": state["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": state["layernorm.weight"], "norm.bias": state["layernorm.bias"]}
    for i in range(DEPTH):
        s, d = f"encoder.layer.{i}", f"blocks.{i}"
        for part in ("weight", "bias"):
            new[f"{d}.attn.qkv.{part}"] = torch.cat([state[f"{s}.attention.{p}_proj.{part}"] for p in "qkv"])
            new[f"{d}.attn.proj.{part}"] = state[f"{s}.attention.o_proj.{part}"]
            for name in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                new[f"{d}.{name}.{part}"] = state[f"{s}.{name}.{part}"]
        new[f"{d}.ls1.gamma"] = state[f"{s}.layer_scale1.lambda1"]
        new[f"{d}.ls2.gamma"] = state[f"{s}.layer_scale2.lambda1"]
    model.load_state_dict(new, strict=True)
    transform = T.Compose([T.Resize((224, 224), T.InterpolationMode.BICUBIC), T.ToTensor(),
                           T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    with torch.no_grad():
        x = torch.stack([transform(Image.fromarray(im)) for im in images])
        return model.forward_features(x)[:, 0].numpy()


def test_cls_embeddings_match_the_release_pipeline_on_timm(tiny):
    ext = Dinov2VitL14(batch_size=2, model_dir=tiny["folder"])
    ext.load()
    ours = ext.extract(tiny["images"])["cls"]
    reference = _timm_reference(tiny["state"], tiny["images"])
    assert ours.shape == (5, WIDTH) and ours.dtype == np.float32
    gaps = np.linalg.norm(reference[:, None] - reference[None], axis=-1) + np.eye(len(reference))
    assert gaps.min() > 0.1  # distinct images give distinct rows, so a mix-up would show
    np.testing.assert_allclose(ours, reference, atol=1e-6, rtol=0)  # measured: 0.0
    whole = Dinov2VitL14(batch_size=5, model_dir=tiny["folder"])
    whole.load()
    np.testing.assert_allclose(whole.extract(tiny["images"])["cls"], ours, atol=1e-6, rtol=0)


def test_transformers_own_position_resampling_would_move_the_features(tiny):
    """Why the extractor resamples the position embeddings itself: transformers maps the grid with size=16."""
    from transformers import Dinov2Model

    from harness.features.dinov2 import dgm_eval_pixels

    ext = Dinov2VitL14(model_dir=tiny["folder"])
    ext.load()
    plain = Dinov2Model.from_pretrained(tiny["folder"]).eval()
    with torch.no_grad():
        theirs = plain(pixel_values=dgm_eval_pixels(tiny["images"])).pooler_output.numpy()
    assert np.abs(theirs - ext.extract(tiny["images"])["cls"]).max() > 1e-3


def test_spec_follows_the_weights_and_broken_folders_are_refused(tiny, tmp_path):
    key = Dinov2VitL14(model_dir=tiny["folder"]).spec.key
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_bytes((tiny["folder"] / "config.json").read_bytes())
    with pytest.raises(HarnessError, match=r"model.safetensors missing from .*other"):
        _ = Dinov2VitL14(model_dir=other).spec
    from safetensors.torch import load_file, save_file

    state = load_file(tiny["folder"] / "model.safetensors")
    del state["layernorm.bias"]
    save_file(state, other / "model.safetensors", metadata={"format": "pt"})
    broken = Dinov2VitL14(model_dir=other)
    assert broken.spec.key != key
    with pytest.raises(HarnessError, match=r"layernorm.bias"):
        broken.load()


def test_missing_weights_say_not_computed(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFound, match=r"not computed: weights not found \(harness weights fetch "
                                              r"dinov2-vit-l-14\)"):
        _ = get_extractor("dinov2-vit-l-14").spec


def test_fd_dinov2_is_the_frechet_distance_of_the_cls_statistics(tiny, monkeypatch):
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tiny["folder"].parent))
    monkeypatch.setattr(loaded_cache, "_LOADED", {})
    ext = get_extractor("dinov2-vit-l-14")
    ext.load()
    rng = np.random.default_rng(1)
    gen = ext.extract(rng.integers(0, 256, (12, 64, 64, 3), dtype=np.uint8))["cls"]
    ref_rows = ext.extract(rng.integers(0, 120, (16, 64, 64, 3), dtype=np.uint8))["cls"].astype(np.float64)
    mu, sigma = ref_rows.mean(axis=0), np.cov(ref_rows, rowvar=False)
    metric = get_metric("fd_dinov2")
    reference = ReferenceStats(mu, sigma, len(ref_rows), ext.spec.key, "test", {"output": "cls"})
    result = metric.compute([ShardFeatures(gen[:5], (None,) * 5), ShardFeatures(gen[5:], (None,) * 7)], reference)
    g = gen.astype(np.float64)
    expected, _ = frechet_distance(g.mean(axis=0), np.cov(g, rowvar=False), mu, sigma)
    assert result.value == pytest.approx(expected, rel=1e-9) and result.value > 0.1
    assert "rank-deficient" in result.details["warning"] and metric.min_reliable_n == 1024
    wrong = ReferenceStats(mu, sigma, len(ref_rows), "another-extractor", "test", {"output": "cls"})
    with pytest.raises(HarnessError, match="was computed with extractor key another-extractor"):
        metric.compute([ShardFeatures(gen, (None,) * 12)], wrong)


def test_harness_score_gives_fd_dinov2_of_two_folders(tiny, tmp_path, monkeypatch):
    from harness.cli.score import score_images

    monkeypatch.setenv("HARNESS_WEIGHTS", str(tiny["folder"].parent))
    monkeypatch.setattr(loaded_cache, "_LOADED", {})
    rng = np.random.default_rng(2)
    sets = {"gen": rng.integers(0, 256, (6, 48, 48, 3), dtype=np.uint8),
            "ref": rng.integers(60, 200, (7, 48, 48, 3), dtype=np.uint8)}
    for name, images in sets.items():
        (tmp_path / name).mkdir()
        for i, im in enumerate(images):
            Image.fromarray(im).save(tmp_path / name / f"{i:04d}.png")
    row = score_images(tmp_path / "gen", ["fd_dinov2"], str(tmp_path / "ref"), tmp_path / "cache")[0]
    ext = Dinov2VitL14(model_dir=tiny["folder"])
    ext.load()
    g, r = (ext.extract(sets[k])["cls"].astype(np.float64) for k in ("gen", "ref"))
    expected, _ = frechet_distance(g.mean(0), np.cov(g, rowvar=False), r.mean(0), np.cov(r, rowvar=False))
    assert row.metric == "fd_dinov2" and row.n == 6 and row.value == pytest.approx(expected, rel=1e-6)
