"""CLIP Score through open_clip, cross-checked against transformers' CLIPModel/CLIPProcessor on the same weights.

The weights are a tiny random CLIP of the real ViT architecture (real vocabulary, 77 tokens, 224 input) saved
as an OpenAI-layout state dict; the harness loads it through the same code path as OpenAI's ViT-B-16.pt.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.features import get_extractor
from harness.features.clip import ClipVitB16OpenAI
from harness.features.weights import WeightsNotFound
from harness.metrics import ShardFeatures, get_metric
from harness.run import extract as pipeline
from tests.support.clip_metric_fixtures import PROMPTS


def test_embeddings_match_transformers(tiny):
    ext = ClipVitB16OpenAI(batch_size=4, weights_path=tiny["path"])
    ext.load("cpu")
    ours = 100 * (ext.extract(tiny["images"])["image_embeds"] * ext.encode_text(PROMPTS)).sum(axis=1)
    reference = tiny["reference"]
    assert np.abs(reference).max() > 1  # the check has room to fail
    np.testing.assert_allclose(ours, reference, atol=1e-3)
    assert ext.truncated(PROMPTS) == [False, False, False, True, False, False]


def test_batch_size_invariance_and_non_square_input(tiny):
    one, four = (ClipVitB16OpenAI(batch_size=b, weights_path=tiny["path"]) for b in (1, 4))
    one.load(), four.load()
    np.testing.assert_allclose(one.extract(tiny["images"])["image_embeds"],
                               four.extract(tiny["images"])["image_embeds"], atol=1e-6)
    wide = np.random.default_rng(1).integers(0, 256, (2, 180, 300, 3), dtype=np.uint8)
    embeds = four.extract(wide)["image_embeds"]
    assert embeds.shape == (2, 32) and np.allclose(np.linalg.norm(embeds, axis=1), 1, atol=1e-5)


def _shards(ext, tiny, prompts):
    feats = ext.extract(tiny["images"])["image_embeds"]
    return [ShardFeatures(feats[:4], labels=(None,) * 4, prompts=tuple(prompts[:4])),
            ShardFeatures(feats[4:], labels=(None,) * 2, prompts=tuple(prompts[4:]))]


def test_clip_score_metrics_paper_and_clamped(installed):
    ext = get_extractor("clip-vit-b-16-openai")
    ext.load()
    reference = installed["reference"]
    assert (reference < 0).any() and (reference > 0).any()  # so the clamp is exercised
    paper = get_metric("clip_score").compute(_shards(ext, installed, PROMPTS))
    assert paper.value == pytest.approx(reference.mean(), abs=1e-3) and paper.n == len(PROMPTS)
    assert paper.details["truncated_prompts"] == 1 and paper.details["distinct_prompts"] == 5
    assert paper.details["truncated_samples"] == 1
    assert paper.ci_low < paper.value < paper.ci_high
    clamped = get_metric("clip_score_clamped").compute(_shards(ext, installed, PROMPTS))
    assert clamped.value == pytest.approx(np.maximum(reference, 0).mean(), abs=1e-3)
    assert clamped.details["clamped_samples"] == int((reference < 0).sum())
    assert clamped.value > paper.value


def test_missing_prompt_is_an_error(installed):
    ext = get_extractor("clip-vit-b-16-openai")
    ext.load()
    prompts = PROMPTS[:3] + [None] + PROMPTS[4:]
    with pytest.raises(HarnessError, match="shard 0 sample 3 has no prompt"):
        get_metric("clip_score").compute(_shards(ext, installed, prompts))


def test_missing_weights_say_not_computed(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(WeightsNotFound, match=r"not computed: weights not found \(harness weights fetch "
                                              r"clip-vit-b-16-openai\); needs ViT-B-16.pt in"):
        get_extractor("clip-vit-b-16-openai").load()


def test_wrong_file_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    (tmp_path / "clip-vit-b-16-openai").mkdir()
    (tmp_path / "clip-vit-b-16-openai" / "ViT-B-16.pt").write_bytes(b"not the OpenAI file")
    with pytest.raises(HarnessError, match="ViT-B-16.pt: sha256 .* does not match the expected 5806e77c"):
        get_extractor("clip-vit-b-16-openai").load()


def test_score_stage_carries_each_samples_prompt(tmp_path):
    """pipeline._shard_features hands every metric the prompt recorded for each sample, in order."""
    from harness.types import SampleRecord, ShardManifest

    samples = tuple(SampleRecord(index=i, seed=i, label=i, prompt=p, file=f"{i}.png", sha256=f"{i:064d}", nfe=1,
                                 seconds=0.0) for i, p in enumerate(["a photo of a tench", None, "a red cube"]))
    manifest = ShardManifest(cell_id="c", start=0, stop=3, samples=samples, harness_version="test")
    path = pipeline.feature_path(tmp_path, "key", manifest.content_digest)
    path.parent.mkdir(parents=True)
    np.savez(path, image_embeds=np.eye(3, dtype=np.float32))
    (shard,) = pipeline._shard_features(tmp_path, "key", "image_embeds", [manifest])
    assert shard.prompts == ("a photo of a tench", None, "a red cube") and shard.labels == (0, 1, 2)
