"""Per-class CLIP Score / PickScore: per-class means of the per-sample scores (checked against transformers'
independent CLIP on the same tiny weights), a class-balanced row value, and the tidy per-class table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.errors import HarnessError
from harness.features import get_extractor
from harness.metrics import ShardFeatures, get_metric
from harness.metrics.per_class import per_class_table_path, write_per_class_table
from tests.support.clip_metric_fixtures import hf_clip_scores

CLASS_PROMPTS = {0: "a photo of a tench", 1: "a photo of a goldfish", 2: "a photo of a great white shark"}
LABELS = (0, 1, 1, 2, 2, 2)  # unbalanced: the macro mean differs from the plain mean


def _shards(installed, labels):
    ext = get_extractor("clip-vit-b-16-openai")
    ext.load()
    feats = ext.extract(installed["images"])["image_embeds"]
    prompts = tuple(CLASS_PROMPTS[c] if c is not None else "a photo" for c in labels)
    return [ShardFeatures(feats[:2], labels[:2], prompts[:2]), ShardFeatures(feats[2:], labels[2:], prompts[2:])]


def test_clip_score_per_class_means_and_macro_value(installed):
    reference = hf_clip_scores(installed, [CLASS_PROMPTS[c] for c in LABELS])  # transformers, per sample
    expected = {c: reference[np.array(LABELS) == c].mean() for c in CLASS_PROMPTS}
    result = get_metric("clip_score_per_class").compute(_shards(installed, LABELS))
    assert result.n == 6 and result.details["classes"] == 3
    assert {int(k): v["n"] for k, v in result.details["per_class"].items()} == {0: 1, 1: 2, 2: 3}
    for c, mean in expected.items():
        assert result.details["per_class"][str(c)]["value"] == pytest.approx(mean, abs=1e-3)
    assert result.value == pytest.approx(np.mean(list(expected.values())), abs=1e-3)
    plain = get_metric("clip_score").compute(_shards(installed, LABELS)).value
    assert plain == pytest.approx(reference.mean(), abs=1e-3)
    assert abs(plain - result.value) > 1e-2  # unbalanced classes: the two aggregates really differ


def test_per_class_needs_labels(installed):
    with pytest.raises(HarnessError, match="sample 0 has no class label .*class-conditional"):
        get_metric("clip_score_per_class").compute(_shards(installed, (None,) * 6))


def test_per_class_table_is_tidy(tmp_path):
    per_class = {"2": {"value": 30.5, "n": 3}, "0": {"value": 12.25, "n": 1}}
    path = write_per_class_table(tmp_path, "cell-a", "clip_score_per_class", "v", per_class)
    assert path == per_class_table_path(tmp_path, "cell-a", "clip_score_per_class")
    table = pd.read_parquet(path)
    assert table.to_dict("records") == [
        {"cell_id": "cell-a", "metric": "clip_score_per_class", "variant": "v", "label": 0, "value": 12.25, "n": 1},
        {"cell_id": "cell-a", "metric": "clip_score_per_class", "variant": "v", "label": 2, "value": 30.5, "n": 3}]


def test_pickscore_per_class_is_pickscore_grouped():
    from harness.metrics.pickscore import PickScore

    metric = get_metric("pickscore_per_class")
    assert metric.extractor == "pickscore-v1" and metric.variant.startswith(PickScore.variant)
    assert "per-class" in metric.variant and type(metric).per_sample is PickScore.per_sample


@pytest.mark.parametrize("name", ["clip_score", "clip_score_per_class"])
def test_text_image_bootstrap_replicates_recompute_the_metric_on_resampled_samples(installed, name):
    """Replicate b must equal the metric computed on the samples indices[b] picks (prompts travel with them)."""
    metric = get_metric(name)
    shards = _shards(installed, LABELS)
    indices = np.random.default_rng(3).integers(0, len(LABELS), (5, len(LABELS)))
    replicates = metric.shard_replicates(shards, None, indices)
    feats = np.concatenate([s.features for s in shards])
    labels = np.array(LABELS, dtype=object)
    prompts = np.array([p for s in shards for p in s.prompts], dtype=object)
    for b, idx in enumerate(indices):
        resampled = [ShardFeatures(feats[idx], tuple(labels[idx]), tuple(prompts[idx]))]
        assert replicates[b] == pytest.approx(metric.compute(resampled).value, rel=1e-6)
    assert np.ptp(replicates) > 0  # the resampling moved the value: the check has room to fail
