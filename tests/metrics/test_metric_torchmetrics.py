"""Certification against torchmetrics (a TEST-only pin) on identical inputs and identical tiny weights.

- FID: torchmetrics' ``FrechetInceptionDistance`` around its ``NoTrainInceptionV3`` with ``antialias=False``
  (TF1-legacy bilinear, the tf1/ADM convention; torchmetrics >= 1.8 defaults to antialias=True, a different
  resize) on the same random Kaiming weights file, 48x48 and 64x64 inputs (resize exercised). Tolerance rel 1e-3:
  torchmetrics returns float32 and sums Σxxᵀ (cancellation-prone), its own test tolerance.
- CLIP Score: torchmetrics' ``CLIPScore`` on the tiny CLIP converted to a transformers ``CLIPModel`` (the callable
  form of ``model_name_or_path``), prompts <= 77 tokens. Per sample the scores agree (<= 1e-3); torchmetrics then
  clamps the *mean* at 0 while ``clip_score_clamped`` clamps each sample (documented in docs/metrics.md), so the two
  differ exactly by that rule and the test checks both sides of it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.features import get_extractor
from harness.features.clip import ClipVitB16OpenAI
from harness.metrics import get_metric
from harness.metrics.base import ShardFeatures
from harness.references.artefacts import ReferenceStats
from tests.support.metric_fixtures import image_set

torchmetrics = pytest.importorskip("torchmetrics", reason="torchmetrics is a test-only pin (requirements-test.txt)")

N = 16
SHORT_PROMPTS = ["a photo of a tench", "a photo of a crane bird", "a photo of a construction crane",
                 "a photo of a goldfish", "a photo of a tench", "a red square"]


@pytest.mark.slow
def test_fid_equals_torchmetrics_antialias_false(tf1_weights):
    from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3

    gen = np.concatenate([image_set(21, N // 2, 48), image_set(22, N // 2, 64)[:, 8:56, 8:56]])
    ref = image_set(23, N, 48, bright=0.8)
    network = NoTrainInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(tf1_weights),
                                 antialias=False)
    theirs = FrechetInceptionDistance(feature=network, normalize=False)
    for images, real in ((ref, True), (gen, False)):
        theirs.update(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), real=real)
    expected = float(theirs.compute())

    ext = get_extractor("inception-tf1")
    ext.load()
    ref_rows = ext.extract(ref)["pool3"].astype(np.float64)
    stats = ReferenceStats(ref_rows.mean(0), np.cov(ref_rows, rowvar=False), N, ext.spec.key, "test", {})
    ours = get_metric("fid_tf1").compute([ShardFeatures(ext.extract(gen)["pool3"], (None,) * N)], stats).value
    assert ours > 1.0  # two different sets: a real distance
    assert ours == pytest.approx(expected, rel=1e-3)


class _TensorFeatures(torch.nn.Module):
    """torchmetrics 1.9 expects ``get_*_features`` to return tensors; transformers 5 returns output objects whose
    ``pooler_output`` is that tensor. Only the return type is adapted: same model, same call."""

    def __init__(self, hf) -> None:
        super().__init__()
        self.hf, self.config = hf, hf.config

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return self.hf.get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return self.hf.get_text_features(*args, **kwargs).pooler_output


def _torchmetrics_clip(tiny_model, processor_dir):
    from transformers import CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from tests.support.clip_fixtures import to_hf

    hf = to_hf(tiny_model)
    # PIL image backend, as ours (transformers < 5's default, the one published CLIP Scores ran)
    processor = CLIPProcessor.from_pretrained(processor_dir,
                                              image_processor=CLIPImageProcessorPil.from_pretrained(processor_dir))
    return _TensorFeatures(hf), processor


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from tests.support.clip_fixtures import tiny_openclip, write_clip_tokenizer

    root = tmp_path_factory.mktemp("clip-tm")
    model = tiny_openclip(seed=1)  # seed 1: per-sample scores of both signs, positive mean
    torch.save(model.state_dict(), root / "ViT-B-16.pt")
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (len(SHORT_PROMPTS), 96, 128, 3), dtype=np.uint8)  # non-square, not 224
    images[:3] //= 4
    return {"model": model, "path": root / "ViT-B-16.pt", "processor": write_clip_tokenizer(root / "proc"),
            "images": images}


def test_clip_score_equals_torchmetrics_per_sample_and_clamp_rule(tiny_clip):
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update
    from torchmetrics.multimodal.clip_score import CLIPScore

    hf, processor = _torchmetrics_clip(tiny_clip["model"], tiny_clip["processor"])
    images = [torch.from_numpy(im).permute(2, 0, 1).contiguous() for im in tiny_clip["images"]]
    with torch.no_grad():
        per_sample, _ = _clip_score_update(images, SHORT_PROMPTS, hf, processor)
        metric = CLIPScore(model_name_or_path=lambda: (hf, processor))
        metric.update(images, SHORT_PROMPTS)
        theirs_value = float(metric.compute())

    ext = ClipVitB16OpenAI(batch_size=4, weights_path=tiny_clip["path"])
    ext.load()
    assert not any(ext.truncated(SHORT_PROMPTS))  # <= 77 tokens: torchmetrics never truncates differently
    ours = 100 * (ext.extract(tiny_clip["images"])["image_embeds"] * ext.encode_text(SHORT_PROMPTS)).sum(axis=1)
    theirs = per_sample.numpy()
    assert np.abs(theirs).max() > 1 and (theirs < 0).any() and (theirs > 0).any()  # room to fail, clamp exercised
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    # torchmetrics: max(mean, 0); ours (clip_score_clamped): mean(max(s, 0)), documented per-sample clamp
    assert theirs_value == pytest.approx(max(theirs.mean(), 0.0), abs=1e-4)
    assert np.maximum(ours, 0).mean() > theirs_value  # negatives pull torchmetrics' number down, not ours
