"""PickScore through transformers on a tiny CLIP saved as a PickScore_v1-style folder, against the reference
formula exp(logit_scale) * cos computed independently with open_clip on the same weights."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import harness.features as loaded_cache
from harness.errors import HarnessError
from harness.features import get_extractor
from harness.features.pickscore import PickScoreV1
from harness.features.weights import WeightsNotFound
from harness.metrics import ShardFeatures, get_metric
from tests.support.clip_fixtures import tiny_openclip, to_hf, write_clip_tokenizer

PROMPTS = ["a photo of a tench", "a photo of a goldfish", "a photo of a " + "very " * 90 + "large shark"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pick")
    model = tiny_openclip(seed=1)
    to_hf(model).save_pretrained(root / "pickscore-v1")
    write_clip_tokenizer(root / "clip-vit-h-14-laion2b-processor")
    images = np.stack([np.full((224, 224, 3), c, np.uint8) for c in (10, 240, 128)])
    images[2, :, :100] = (255, 0, 0)
    return {"root": root, "model": model, "images": images}


def _open_clip_reference(model, images, prompts) -> np.ndarray:
    import open_clip
    from open_clip.transform import image_transform

    pre = image_transform(224, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD)
    tokens = open_clip.tokenize(prompts)  # OpenAI BPE, 77 tokens, EOT kept on truncation
    with torch.no_grad():
        img = model.encode_image(torch.stack([pre(Image.fromarray(im)) for im in images]))
        txt = model.encode_text(tokens)
        return (model.logit_scale.exp() * torch.nn.functional.cosine_similarity(img, txt)).numpy()


def test_pickscore_matches_reference_formula(folders, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_WEIGHTS", str(folders["root"]))
    monkeypatch.setattr(loaded_cache, "_LOADED", {})
    ext = get_extractor("pickscore-v1")
    ext.load()
    feats = ext.extract(folders["images"])["image_embeds"]
    shards = [ShardFeatures(feats[:2], (None, None), tuple(PROMPTS[:2])), ShardFeatures(feats[2:], (None,),
                                                                                       (PROMPTS[2],))]
    result = get_metric("pickscore").compute(shards)
    reference = _open_clip_reference(folders["model"], folders["images"], PROMPTS)
    assert np.ptp(reference) > 1  # distinct per-sample values, so a mix-up would show
    assert result.value == pytest.approx(reference.mean(), abs=1e-3)
    assert result.details["logit_scale_exp"] == pytest.approx(100.0, rel=1e-3)
    assert result.details["truncated_prompts"] == result.details["truncated_samples"] == 1 and result.n == 3


def test_explicit_folders_and_spec_digest(folders):
    ext = PickScoreV1(batch_size=2, model_dir=folders["root"] / "pickscore-v1",
                      processor_dir=folders["root"] / "clip-vit-h-14-laion2b-processor")
    before = ext.spec.key
    ext.load()
    assert ext.extract(folders["images"])["image_embeds"].shape == (3, 32)
    other = tiny_openclip(seed=2)
    to_hf(other).save_pretrained(folders["root"] / "other")
    changed = PickScoreV1(model_dir=folders["root"] / "other",
                          processor_dir=folders["root"] / "clip-vit-h-14-laion2b-processor")
    assert changed.spec.key != before  # other weights, other cache key


def test_missing_weights_and_tampered_record(folders, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFound, match=r"not computed: weights not found \(harness weights fetch "
                                              r"pickscore-v1\)"):
        get_extractor("pickscore-v1").load()
    # a digest recorded at fetch time is enforced afterwards
    for name in ("pickscore-v1", "clip-vit-h-14-laion2b-processor"):
        shutil.copytree(folders["root"] / name, tmp_path / name)
    (tmp_path / "pickscore-v1" / "SHA256SUMS").write_text("0" * 64 + "  config.json\n")
    with pytest.raises(HarnessError, match="config.json: sha256 .* does not match the expected 0000"):
        get_extractor("pickscore-v1").load()
