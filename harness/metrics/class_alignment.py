"""Class alignment: how often a classifier's argmax equals the class the sample was requested as."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.metrics.base import Metric, MetricResult, ShardFeatures

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion: stays inside [0, 1] and is sane at p = 0 or 1."""
    if n <= 0:
        raise HarnessError(f"wilson_interval: needs n >= 1, got {n}")
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    return max(0.0, centre - half), min(1.0, centre + half)


class ClassAlignment(Metric):
    name = "class_alignment"
    variant = "mnist-cnn/argmax==requested"
    higher_is_better = True
    value_range = (0.0, 1.0)  # a proportion of samples
    extractor = "mnist-cnn"
    output = "logits"
    needs_reference = False
    requires = frozenset({"class_model"})  # the label of a sample is the class its model was asked for

    def compute(self, shards: Iterable[ShardFeatures], reference: Any | None = None) -> MetricResult:
        correct = total = 0
        for index, shard in enumerate(shards):
            logits = np.asarray(shard.features)
            if logits.ndim != 2 or len(logits) != len(shard.labels):
                raise HarnessError(f"class_alignment: shard {index} has logits of shape {logits.shape} "
                                   f"but {len(shard.labels)} labels; expected (n_labels, n_classes)")
            if not np.isfinite(logits).all():  # argmax would silently read a NaN row as class 0
                raise HarnessError(f"class_alignment: shard {index} has {int((~np.isfinite(logits)).sum())} "
                                   f"non-finite logits (NaN/Inf); refusing to score them")
            if any(label is None for label in shard.labels):
                raise HarnessError(f"class_alignment: shard {index} has samples without a requested label; "
                                   f"class alignment needs class-conditional samples")
            labels = np.asarray(shard.labels, dtype=np.int64)
            if len(labels) and (labels.min() < 0 or labels.max() >= logits.shape[1]):
                raise HarnessError(f"class_alignment: shard {index} requests label {int(labels.max())} or "
                                   f"{int(labels.min())}, outside the classifier's 0..{logits.shape[1] - 1}")
            correct += int((logits.argmax(axis=1) == labels).sum())
            total += len(labels)
        if total == 0:
            raise HarnessError("class_alignment: no samples to score")
        low, high = wilson_interval(correct, total)
        return MetricResult(value=correct / total, ci_low=low, ci_high=high, n=total,
                            details={"correct": correct, "ci": "wilson-score-95"})
