"""The metric interface. A metric consumes per-shard features of one cell (streamed) and returns a value.

Corpus metrics (FID) need reference statistics; per-sample metrics (class alignment) need the
requested labels. Every metric names the extractor and the extractor output it reads, so the
pipeline can extract each output once per shard and feed every metric that needs it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class ShardFeatures:
    features: np.ndarray  # (n_shard, ...) the metric's extractor output for this shard
    labels: tuple[int | None, ...]  # requested label per sample (None for unconditional/text)
    prompts: tuple[str | None, ...] = ()  # prompt per sample (request's, or the class prompt); text metrics


@dataclass(frozen=True)
class MetricResult:
    value: float
    ci_low: float | None
    ci_high: float | None
    n: int
    details: dict[str, Any] = field(default_factory=dict)  # e.g. clamped eigenvalues, warnings


class Metric(ABC):
    name: ClassVar[str]
    variant: ClassVar[str]  # recorded in every row, e.g. "fid-helper-inception/float64-eigh"
    source: ClassVar[str] = ""  # the paper that defines the metric, listed by ``harness ls metrics``
    higher_is_better: ClassVar[bool]
    extractor: ClassVar[str]  # extractor registry name
    output: ClassVar[str]  # which output of the extractor
    needs_reference: ClassVar[bool]
    # "stats" (ReferenceStats: mu/sigma, FID) or "features" (ReferenceFeatures: rows, KID / P-R)
    reference_kind: ClassVar[str] = "stats"
    # The values the statistic can take (None: unbounded). A bootstrap interval is cut to it: the basic
    # bootstrap reflects the replicates about the value and can otherwise reach e.g. an FID below 0.
    value_range: ClassVar[tuple[float | None, float | None]] = (None, None)
    # What every sample of a cell must carry, checked at plan time (harness/plan/protocol.py) so a metric that
    # cannot be computed is refused before any image is made: "class_model" (the model is class-conditional: its
    # sample's label is the class it was asked for), "labels" (the dataset gives every sample a class),
    # "prompts" (the dataset gives every sample a prompt).
    requires: ClassVar[frozenset[str]] = frozenset()
    # True when the result's details carry "per_class" {label: {value, n}}: the score stage then writes the
    # tidy per-class table beside the row (harness/metrics/per_class.py).
    per_class: ClassVar[bool] = False
    # False when "higher (lower) is better" holds only up to a target (density: ~1 means real-like crowding,
    # more means samples pile into the reference's dense regions): such a metric is shown, but never enters
    # MMHM unless named with --mmhm-metrics (MMHM rewards the extreme of each metric).
    monotone: ClassVar[bool] = True
    # A composite (harness/metrics/scaled.py) names the metrics it is computed from: it reads no features, and the
    # score stage computes it after them from their results and replicates (harness.metrics.measured_metrics).
    components: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def compute(self, shards: Iterable[ShardFeatures], reference: Any | None) -> MetricResult: ...

    def shard_replicates(self, shards: list[ShardFeatures], reference: Any | None, indices: np.ndarray) -> np.ndarray:
        """Bootstrap replicates from the cell's shards (what the score stage calls). Metrics that need more than
        features and labels (the prompts of text-image metrics) override this one."""
        features = np.concatenate([s.features for s in shards])
        labels = tuple(label for s in shards for label in s.labels)
        return self.replicates(features, labels, reference, indices)

    def replicates(self, features: np.ndarray, labels: tuple[int | None, ...], reference: Any | None,
                   indices: np.ndarray) -> np.ndarray:
        """Bootstrap replicate values: row b recomputes the metric on ``features[indices[b]]``
        (reference side fixed). Metrics override this with an exact faster form where one exists."""
        label_array = np.array(labels, dtype=object)
        return np.array([self.compute([ShardFeatures(features[idx], tuple(label_array[idx]))], reference).value
                         for idx in indices], dtype=np.float64)


class RowsVsReferenceMetric(Metric):
    """Compares the cell's feature rows with the reference set's own rows (KID, precision/recall), not with
    summary statistics."""

    needs_reference = True
    reference_kind = "features"

    def _rows(self, shards: Iterable[ShardFeatures], reference: Any | None) -> tuple[np.ndarray, Any]:
        """(generated rows, the checked ReferenceFeatures); refused unless the reference's spec and output match."""
        from harness.references.artefacts import check_reference_features  # lazy: keeps torch out of planning

        ref = check_reference_features(self, reference)
        return np.concatenate([np.asarray(s.features) for s in shards]), ref
