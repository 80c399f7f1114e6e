"""Per-class CLIP Score / PickScore for class-conditional prompts ("a photo of a {class name}").

Same per-sample scores as ``clip_score`` / ``pickscore``, grouped by each sample's requested class label. The
metric row's value is the class-balanced (macro) mean: the mean over classes of the per-class means (equal to
the plain mean when every class has the same number of samples; a class with more samples does not weigh more).
The per-class means themselves go to a tidy table artefact, one row per class
(``<run>/per_class/<cell>/<metric>.parquet``: cell_id, metric, variant, label, value, n), written by the score
stage from ``details["per_class"]``; the metric row stays one row per (cell, metric) as docs/metrics.md says.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.metrics.base import MetricResult, ShardFeatures
from harness.metrics.clip_score import ClipScore
from harness.metrics.pickscore import PickScore
from harness.metrics.text_image import TextImageMetric
from harness.store import atomic_write


def class_means(scores: np.ndarray, labels: list[int | None], who: str) -> dict[int, tuple[float, int]]:
    """{label: (mean score, n)}; every sample must carry a class label."""
    missing = [k for k, label in enumerate(labels) if label is None]
    if missing:
        raise HarnessError(f"{who}: sample {missing[0]} has no class label ({len(missing)} without); per-class "
                           f"scores need a class-conditional dataset")
    array = np.asarray(labels, dtype=np.int64)
    return {int(c): (float(scores[array == c].mean()), int((array == c).sum())) for c in np.unique(array)}


class PerClassTextImageMetric(TextImageMetric):
    requires = frozenset({"prompts", "labels"})  # a prompt to score against and a class to average within
    per_class = True

    def compute(self, shards: Iterable[ShardFeatures], reference: Any | None = None) -> MetricResult:
        shards = list(shards)
        labels = [label for s in shards for label in s.labels]
        scores, details = self.sample_scores(shards)
        per_class = class_means(scores, labels, self.name)
        means = np.array([mean for mean, _ in per_class.values()])
        return MetricResult(value=float(means.mean()), ci_low=None, ci_high=None, n=len(scores), details={
            **details, "aggregate": "mean over classes of per-class means (class-balanced)",
            "classes": len(per_class), "per_class": {str(c): {"value": m, "n": n} for c, (m, n) in per_class.items()}})


    def aggregate(self, scores: np.ndarray, labels: np.ndarray) -> float:
        means = [mean for mean, _ in class_means(scores, list(labels), self.name).values()]
        return float(np.mean(means))


class ClipScorePerClass(PerClassTextImageMetric, ClipScore):
    name = "clip_score_per_class"
    variant = ClipScore.variant + "/per-class(macro mean)"


class PickScorePerClass(PerClassTextImageMetric, PickScore):
    name = "pickscore_per_class"
    variant = PickScore.variant + "/per-class(macro mean)"


def per_class_table_path(run_dir: Path, cell_id: str, metric: str) -> Path:
    return Path(run_dir) / "per_class" / cell_id / f"{metric}.parquet"


def write_per_class_table(run_dir: Path, cell_id: str, metric: str, variant: str, per_class: dict) -> Path:
    """Tidy rows (one per class) of a per-class metric's ``details["per_class"]``, as parquet."""
    import pandas as pd

    rows = [{"cell_id": cell_id, "metric": metric, "variant": variant, "label": int(label),
             "value": float(entry["value"]), "n": int(entry["n"])} for label, entry in per_class.items()]
    path = per_class_table_path(run_dir, cell_id, metric)
    frame = pd.DataFrame(rows).sort_values("label")
    atomic_write(path, lambda f: frame.to_parquet(f, index=False))
    return path
