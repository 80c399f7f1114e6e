"""CMMD: the embeddings of a tiny random CLIP of the real architecture (336 px input, OpenAI file layout) against
CMMD's reference pipeline rebuilt on transformers (crop, PIL resize, /255, torch bicubic, CLIPImageProcessor
normalisation, CLIPVisionModelWithProjection-style embeddings); the distance against the reference formula
(float32 torch, whole matrices) and closed forms; the metric, its reference checks and bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from harness.errors import HarnessError
from harness.features import get_extractor
from harness.features.clip_cmmd import ClipVitL14x336Cmmd
from harness.features.weights import WeightsNotFound
from harness.metrics import ShardFeatures, get_metric
from harness.metrics import cmmd as cmmd_module
from harness.metrics.cmmd import cmmd
from harness.references.artefacts import ReferenceFeatures
from tests.support.clip_fixtures import OPENAI_MEAN, OPENAI_STD, tiny_openclip, to_hf


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = tiny_openclip(seed=3, image_size=336, patch_size=48)
    path = tmp_path_factory.mktemp("cmmd") / "ViT-L-14-336px.pt"
    torch.save(model.state_dict(), path)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (200, 300, 3), dtype=np.uint8) for _ in range(3)]
    images[1][:, :150] = (20, 200, 30)  # landscape: CMMD crops the centre square before resizing
    return {"model": model, "path": path, "images": np.stack(images)}


def _cmmd_reference_embeddings(model, images: np.ndarray) -> np.ndarray:
    """CMMD's reference code path, on transformers' CLIP with the same weights."""
    from transformers import CLIPImageProcessor

    squares = []
    for im in images:
        pil = Image.fromarray(im)
        side = min(pil.size)
        left, top = (pil.size[0] - side) // 2, (pil.size[1] - side) // 2
        squares.append(np.asarray(pil.crop((left, top, left + side, top + side)).resize((336, 336), Image.BICUBIC))
                       .astype(np.float32))
    batch = np.stack(squares) / 255.0
    batch = torch.nn.functional.interpolate(torch.from_numpy(batch.transpose(0, 3, 1, 2)), size=(336, 336),
                                            mode="bicubic").permute(0, 2, 3, 1).numpy()
    processor = CLIPImageProcessor(image_mean=OPENAI_MEAN, image_std=OPENAI_STD)
    pixels = processor(images=list(batch), do_normalize=True, do_center_crop=False, do_resize=False,
                       do_rescale=False, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        emb = to_hf(model).get_image_features(pixel_values=pixels).pooler_output
    return (emb / torch.linalg.norm(emb, dim=-1, keepdim=True)).numpy()


def test_embeddings_match_cmmds_reference_pipeline(tiny):
    ext = ClipVitL14x336Cmmd(batch_size=2, weights_path=tiny["path"])
    ext.load()
    ours = ext.extract(tiny["images"])["image_embeds"]
    reference = _cmmd_reference_embeddings(tiny["model"], tiny["images"])
    assert ours.shape == (3, 32) and np.linalg.norm(reference[0] - reference[1]) > 0.1
    np.testing.assert_allclose(ours, reference, atol=2e-5, rtol=0)


def test_cmmd_crops_before_resizing_unlike_clip_score(tiny):
    """open_clip's transform (CLIP Score) resizes the short side, then crops: another image on non-square input."""
    import open_clip
    from open_clip.transform import image_transform

    ext = ClipVitL14x336Cmmd(weights_path=tiny["path"])
    ext.load()
    clip_score = image_transform(336, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN,
                                 std=open_clip.OPENAI_DATASET_STD)
    image = Image.fromarray(tiny["images"][0])
    assert (ext._preprocess(image) - clip_score(image)).abs().max() > 0.05
    square = Image.fromarray(tiny["images"][0][:, 50:250])
    assert (ext._preprocess(square) - clip_score(square)).abs().max() < 1e-5
    assert ext.spec.key != get_extractor("clip-vit-l-14-openai").spec.key


def _reference_mmd(x: np.ndarray, y: np.ndarray, dtype=np.float32) -> float:
    """The reference code's distance: torch (float32 there), whole kernel matrices, diagonals included, x1000."""
    x, y = torch.from_numpy(x.astype(dtype)), torch.from_numpy(y.astype(dtype))
    gamma = 1 / (2 * 10 ** 2)

    def mean_kernel(a, b):
        return torch.mean(torch.exp(-gamma * (-2 * a @ b.T + (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :])))

    return float(1000 * (mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y)))


def _unit_rows(rng, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    x = rng.normal(size=(n, d)) + shift
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_distance_matches_the_reference_formula_and_closed_forms(monkeypatch):
    rng = np.random.default_rng(4)
    gen, ref = _unit_rows(rng, 50, 16, 0.3), _unit_rows(rng, 70, 16)
    value = cmmd(gen, ref)
    assert value > 0.1 and value == pytest.approx(_reference_mmd(gen, ref, np.float64), rel=1e-10)
    # The reference code's float32 kernel means (each ~0.99, their combination ~1e-3) carry ~1e-4 of rounding
    # noise after the x1000: measured 2.8e-4 here. Ours is float64.
    assert value == pytest.approx(_reference_mmd(gen, ref), abs=1e-3)
    assert cmmd(ref, ref) == pytest.approx(0.0, abs=1e-9)
    x, y = np.array([[0.0, 3.0]]), np.array([[4.0, 0.0]])  # one point each, |x - y|² = 25
    assert cmmd(x, y) == pytest.approx(1000 * (2 - 2 * np.exp(-25 / 200)), rel=1e-12)
    monkeypatch.setattr(cmmd_module, "BLOCK_ELEMENTS", 7)  # row blocks of one: same sums
    assert cmmd(gen, ref) == pytest.approx(value, rel=1e-12)
    with pytest.raises(HarnessError, match="embedding dimensions differ"):
        cmmd(gen, ref[:, :8])


def test_metric_reads_shards_checks_the_reference_and_bootstraps():
    rng = np.random.default_rng(5)
    gen, rows = _unit_rows(rng, 40, 16, 0.2).astype(np.float32), _unit_rows(rng, 60, 16).astype(np.float32)
    metric = get_metric("cmmd")
    key = get_extractor(metric.extractor).spec.key  # spec only: the pinned digest, no file needed
    reference = ReferenceFeatures(rows, key, "test-ref", {"output": "image_embeds"})
    shards = [ShardFeatures(gen[:15], (None,) * 15), ShardFeatures(gen[15:], (None,) * 25)]
    result = metric.compute(shards, reference)
    assert result.value == pytest.approx(cmmd(gen, rows), rel=1e-12) and result.n == 40
    assert result.details["reference_n"] == 60 and result.details["sigma"] == 10.0
    indices = rng.integers(0, 40, (6, 40))
    replicates = metric.replicates(gen, (None,) * 40, reference, np.vstack([np.arange(40), indices]))
    assert replicates[0] == pytest.approx(result.value, rel=1e-10)
    for b, idx in enumerate(indices, start=1):
        assert replicates[b] == pytest.approx(cmmd(gen[idx], rows), rel=1e-10)
    assert np.ptp(replicates) > 0
    wrong = ReferenceFeatures(rows, "other-key", "test-ref", {"output": "image_embeds"})
    with pytest.raises(HarnessError, match="was computed with extractor key other-key"):
        metric.compute(shards, wrong)


def test_missing_weights_say_not_computed(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(WeightsNotFound, match=r"not computed: weights not found \(harness weights fetch "
                                              r"clip-vit-l-14-336-openai\)"):
        get_extractor("clip-vit-l-14-336-cmmd").load()


def _pngs(folder, images: np.ndarray):
    folder.mkdir(parents=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"{i:04d}.png")
    return folder


def test_harness_score_gives_the_cmmd_of_two_folders(tiny, tmp_path, monkeypatch):
    import harness.features as loaded_cache
    from harness.cli.score import score_images
    from harness.features import weights
    from harness.hashing import sha256_file

    entry = weights.ENTRIES["clip-vit-l-14-336-openai"]
    (tmp_path / "w" / entry.name).mkdir(parents=True)
    (tmp_path / "w" / entry.name / entry.files[0].relative).write_bytes(tiny["path"].read_bytes())
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setitem(weights.ENTRIES, entry.name, entry.with_pins({entry.files[0].relative:
                                                                      sha256_file(tiny["path"])}))
    monkeypatch.setattr(loaded_cache, "_LOADED", {})
    reference_images = np.random.default_rng(6).integers(0, 90, (4, 120, 120, 3), dtype=np.uint8)
    gen, ref = _pngs(tmp_path / "gen", tiny["images"]), _pngs(tmp_path / "ref", reference_images)
    row = score_images(gen, ["cmmd"], str(ref), tmp_path / "cache", bootstrap=10)[0]
    ext = ClipVitL14x336Cmmd(weights_path=tiny["path"])
    ext.load()
    expected = cmmd(ext.extract(tiny["images"])["image_embeds"], ext.extract(reference_images)["image_embeds"])
    assert row.metric == "cmmd" and row.n == 3 and row.value == pytest.approx(expected, rel=1e-6)
    assert row.ci_low is not None and row.ci_low <= row.ci_high
