"""The offline world behaves as the science says, on the committed MNIST checkpoints (small sizes).

Scored exactly as the harness scores a cell: samples from the adapters (per-sample seeded noise,
class-balanced labels), the packaged MNIST CNN, ``fid_mnist`` against the held-out MNIST test digits,
and ``class_alignment`` with its Wilson interval.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from harness.datasets import get_dataset
from harness.features import get_extractor
from harness.metrics import get_metric
from harness.metrics.base import MetricResult, ShardFeatures
from harness.models.adapters import get_adapter_class
from harness.models.cards import load_card
from harness.plan.real_floor import REAL_SETTINGS, real_card
from harness.references.artefacts import ReferenceStats, compute_reference_stats
from harness.types import SampleRequest, SamplerSettings

N = 500  # samples per setting: above the 256-d feature dimension, a few seconds per setting
REFERENCE_N = 2000
CHANCE = 0.1
FLOOR = "real-mnist-train"  # the real-data floor: training digits drawn per class (harness/plan/real_floor.py)


@cache
def _extractor():
    extractor = get_extractor("mnist-cnn")
    extractor.load("cpu")
    return extractor


@cache
def _reference() -> ReferenceStats:
    return compute_reference_stats(get_dataset("mnist"), REFERENCE_N, _extractor(), output="penultimate",
                                   progress=False)


@cache
def _adapter(card: str):
    model = real_card("mnist-train", get_dataset("mnist").ref())[0] if card == FLOOR else load_card(card)
    adapter = get_adapter_class(model.family)(model)
    adapter.load("cpu")
    return adapter


@cache
def _score(card: str, steps: int, cfg: float | None, sampler: str = "euler") -> dict[str, MetricResult]:
    settings = SamplerSettings(steps=steps, cfg=cfg, sampler=sampler)
    requests = [SampleRequest(index=i, seed=10_000 + i, label=i % 10, settings=settings) for i in range(N)]
    images = np.concatenate([np.stack([o.image for o in _adapter(card).sample(requests[b:b + 100])])
                             for b in range(0, N, 100)])
    feats = _extractor().extract(images)
    labels = tuple(r.label for r in requests)
    return {"fid_mnist": get_metric("fid_mnist").compute([ShardFeatures(feats["penultimate"], labels)], _reference()),
            "class_alignment": get_metric("class_alignment").compute([ShardFeatures(feats["logits"], labels)])}


BEST = {"fm-mnist": (4, 3.0), "student-mnist": (1, None), "meanflow-mnist": (1, None)}  # best alignment setting


@pytest.mark.parametrize("card", sorted(BEST))
def test_samples_are_classified_as_their_requested_label(card):
    """Far above chance (0.1) for every model at its best setting: the Wilson interval's low end above 0.8."""
    steps, cfg = BEST[card]
    alignment = _score(card, steps, cfg)["class_alignment"]
    assert alignment.ci_low > 0.8, (f"{card} steps={steps} cfg={cfg}: class alignment "
                                    f"{alignment.value:.3f} (Wilson low {alignment.ci_low:.3f})")


def test_the_real_floor_is_below_every_generator():
    """Anchor of the fid_mnist scale: the floor cell (N real TRAINING digits of the requested classes, drawn by
    the same seeds) against the held-out test reference, below the best cell of every model."""
    real = _score(FLOOR, REAL_SETTINGS.steps, None, REAL_SETTINGS.sampler)
    settings = [("fm-mnist", (8, 1.5)), ("fm-mnist", (8, 1.0)), ("fm-mnist", (4, 3.0)), ("student-mnist", (1, None)),
                ("student-mnist", (2, None)), ("meanflow-mnist", (1, None)), ("meanflow-mnist", (8, None))]
    best = min(_score(card, *setting)["fid_mnist"].value for card, setting in settings)
    assert real["fid_mnist"].value < best, (real["fid_mnist"].value, best)
    assert real["class_alignment"].value > 0.97  # the MNIST CNN names real digits correctly


def test_flow_model_fid_improves_from_one_to_eight_steps():
    fids = {s: _score("fm-mnist", s, 1.0)["fid_mnist"].value for s in (1, 2, 4, 8)}
    assert fids[1] > fids[2] > fids[4] > fids[8], fids
    assert fids[8] < 0.5 * fids[1], fids


@pytest.mark.parametrize("card", ["meanflow-mnist", "student-mnist"])
def test_one_step_models_beat_the_flow_model_at_one_step(card):
    one_step = _score(card, 1, None)["fid_mnist"].value
    flow = _score("fm-mnist", 1, 1.0)["fid_mnist"].value
    assert one_step < 0.8 * flow, (one_step, flow)


def test_raising_cfg_raises_class_alignment():
    low, high = (_score("fm-mnist", 4, cfg)["class_alignment"] for cfg in (1.0, 3.0))
    assert high.ci_low > low.ci_high, (low, high)  # Wilson intervals apart
