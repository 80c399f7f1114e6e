"""Class alignment: argmax vs requested label, Wilson interval, refusal of unconditional samples."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError, ProtocolError
from harness.metrics import available_metrics, get_metric
from harness.metrics.base import ShardFeatures
from harness.metrics.class_alignment import ClassAlignment, wilson_interval


def _one_hot_logits(predicted: list[int], k: int = 10) -> np.ndarray:
    logits = np.full((len(predicted), k), -1.0, dtype=np.float32)
    logits[np.arange(len(predicted)), predicted] = 3.0
    return logits


def test_known_logits_give_known_fraction_across_shards():
    # shard 1: 3 of 4 right; shard 2: 1 of 2 right -> 4 / 6
    shards = [ShardFeatures(_one_hot_logits([0, 1, 2, 9]), (0, 1, 2, 3)),
              ShardFeatures(_one_hot_logits([5, 7]), (5, 6))]
    metric = get_metric("class_alignment")
    assert isinstance(metric, ClassAlignment) and metric.higher_is_better and not metric.needs_reference
    result = metric.compute(iter(shards), None)
    assert result.value == pytest.approx(4 / 6)
    assert result.n == 6 and result.details["correct"] == 4
    assert 0.0 <= result.ci_low < result.value < result.ci_high <= 1.0


def test_wilson_interval_known_values_and_edges():
    low, high = wilson_interval(8, 10)  # textbook value: (0.4902, 0.9433)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    low, high = wilson_interval(10, 10)  # p = 1: interval still non-degenerate and inside [0, 1]
    assert 0.6 < low < 1.0 and high == pytest.approx(1.0)
    low, high = wilson_interval(0, 50)
    assert low == pytest.approx(0.0, abs=1e-15) and 0.0 < high < 0.1
    narrow, wide = wilson_interval(900, 1000), wilson_interval(9, 10)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_unconditional_samples_are_refused():
    shard = ShardFeatures(_one_hot_logits([1, 2]), (1, None))
    with pytest.raises(HarnessError, match="class-conditional"):
        ClassAlignment().compute([shard], None)


def test_mismatched_labels_and_empty_input_are_refused():
    with pytest.raises(HarnessError, match="labels"):
        ClassAlignment().compute([ShardFeatures(_one_hot_logits([1, 2]), (1,))], None)
    with pytest.raises(HarnessError, match="outside"):
        ClassAlignment().compute([ShardFeatures(_one_hot_logits([1]), (12,))], None)
    with pytest.raises(HarnessError, match="no samples"):
        ClassAlignment().compute([], None)


def test_metric_registry_names_choices():
    assert {"class_alignment", "fid"} <= set(available_metrics()) and available_metrics() == sorted(available_metrics())
    with pytest.raises(ProtocolError, match=r"did you mean 'fid'.*available: class_alignment, .*fid"):
        get_metric("fdi")
