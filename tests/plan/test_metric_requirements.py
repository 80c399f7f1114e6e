"""Metrics declare what their samples must carry (``Metric.requires``); the plan checks the declaration, never a
metric's name, and refuses a metric it cannot compute before any image is made."""

from __future__ import annotations

import pytest

from harness.errors import ProtocolError
from harness.metrics import available_metrics, get_metric
from harness.plan.protocol import make_plan, protocol_from_dict

KNOWN = {"class_model", "labels", "prompts"}
MNIST = {"name": "p", "models": [{"card": "student-mnist", "cfg": [None]}], "datasets": ["mnist"], "steps": [1],
         "n": 8, "reference_n": 100}


@pytest.mark.parametrize("metric", ["clip_score", "clip_score_per_class", "pickscore"])
def test_a_text_metric_on_a_dataset_without_prompts_is_refused_at_plan_time(metric):
    with pytest.raises(ProtocolError, match=f"metric '{metric}' needs prompts for every sample; dataset 'mnist' "
                                            "provides labels, images"):
        make_plan(protocol_from_dict({**MNIST, "metrics": [metric]}))


def test_class_alignment_needs_a_class_conditional_model():
    raw = {**MNIST, "models": ["fm-tiny-noguide"], "metrics": ["class_alignment"]}
    make_plan(protocol_from_dict(raw))  # class-conditional: planned
    with pytest.raises(ProtocolError, match="metric 'class_alignment' needs a class-conditional model"):
        make_plan(protocol_from_dict({**raw, "models": ["sd-turbo"], "datasets": ["partiprompts"]}))


@pytest.mark.parametrize("name", available_metrics())
def test_every_metric_declares_known_requirements(name):
    metric = get_metric(name)
    assert metric.requires <= KNOWN, (name, metric.requires)
    assert metric.per_class == name.endswith("_per_class")  # the per-class table is written by declaration
    if metric.per_class:
        assert "labels" in metric.requires
