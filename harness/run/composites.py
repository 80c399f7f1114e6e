"""The score stage's side of composite metrics (``Metric.components``, harness/metrics/scaled.py): a composite is
computed from the results and bootstrap replicates its components got on the same cell, never from features.

Its score-cache key covers its own variant (which names the formula and the components' variants) and the
components' cache keys (which cover their features, reference, bootstrap B and interval method), so a change to
any of them, or another formula, is a new entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from harness import __version__
from harness.errors import HarnessError
from harness.hashing import digest
from harness.metrics.base import Metric, MetricResult
from harness.metrics.bootstrap import CI_METHOD


class Scored(NamedTuple):
    """One metric of a cell as the score stage holds it once scored (from the cache or just computed)."""

    key: str  # its score-cache key
    result: MetricResult
    replicates: np.ndarray | None
    reference_id: str


def composite_entry(metric: Metric, cell_id: str, scored: dict[str, Scored], bootstrap: int
                    ) -> tuple[str, Callable[[], tuple[MetricResult, Any]]]:
    """(score-cache key, compute) of a composite from its components already scored on this cell."""
    missing = [c for c in metric.components if c not in scored]
    if missing:
        raise HarnessError(f"metric {metric.name!r}: its component {missing[0]!r} must be scored before it on "
                           f"cell {cell_id} (list it before {metric.name!r})")
    parts = [scored[c] for c in metric.components]
    key = digest({"composite": metric.name, "variant": metric.variant, "cell": cell_id,
                  "components": {c: p.key for c, p in zip(metric.components, parts, strict=True)},
                  "version": __version__, "bootstrap": bootstrap, "ci": CI_METHOD}, length=24)

    def compute() -> tuple[MetricResult, Any]:
        return metric.combine({c: p.result for c, p in zip(metric.components, parts, strict=True)},
                              {c: p.replicates for c, p in zip(metric.components, parts, strict=True)})

    return key, compute
