"""A metric plugin: mean distance of the generated moments from the reference mean (reads a reference)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from harness.metrics import Metric, MetricResult, ShardFeatures, register_metric


@register_metric("plugin_moment_gap")
class PluginMomentGap(Metric):
    name = "plugin_moment_gap"
    variant = "plugin-moments/l2-to-reference-mean"
    higher_is_better = False
    extractor = "plugin-moments"
    output = "moments"
    needs_reference = True
    reference_kind = "stats"
    value_range = (0.0, None)

    def compute(self, shards: Iterable[ShardFeatures], reference: Any | None) -> MetricResult:
        rows = np.concatenate([s.features for s in shards])
        gaps = np.linalg.norm(rows - reference.mu, axis=1)
        half = 1.96 * gaps.std(ddof=1) / np.sqrt(len(gaps)) if len(gaps) > 1 else 0.0
        value = float(gaps.mean())
        return MetricResult(value, max(0.0, value - half), value + half, len(gaps))
