"""The score stage: one cell × its metrics, with bootstrap intervals, from cached features and references.

A score is keyed by everything that feeds it; the cell's rows come from the extract stage's cache.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from harness import __version__
from harness.errors import HarnessError, ShardError
from harness.faults import fault_point
from harness.features import get_extractor
from harness.hashing import digest
from harness.metrics import get_metric
from harness.metrics.base import Metric, MetricResult
from harness.metrics.bootstrap import CI_METHOD, bootstrap_indices, bootstrap_interval, calibrated_replicates
from harness.references.cache import reference_features, reference_stats
from harness.reports.mmhm import replicate_path
from harness.run.composites import Scored, composite_entry
from harness.run.extract import _shard_features, cell_manifests
from harness.store import (
    atomic_write_bytes,
    atomic_write_json,
    read_cell,
)
from harness.types import MetricRow, ShardManifest


@dataclass(frozen=True)
class ScoreContext:
    """What scoring a cell needs from the protocol and the run, gathered once per run."""

    run: str  # the protocol's name, recorded in every row
    metrics: tuple[str, ...]
    shard_size: int
    reference_n: int
    cache: Path
    run_dir: Path
    device: str = "cpu"
    bootstrap: int = 0  # B > 0: every CI from B replicates on the same resampled sample indices
    stats_reference: Any = None  # the protocol's imported mu/sigma (reference_stats), used by every stats metric
    compute_references: bool = True  # False: refuse a reference whose chunks were not extracted (collect)

    @classmethod
    def of(cls, protocol: Any, run_dir: Path, cache: Path, device: str = "cpu", stats_reference: Any = None,
           compute_references: bool = True) -> ScoreContext:
        return cls(protocol.name, tuple(protocol.metrics), protocol.shard_size, protocol.reference_n, Path(cache),
                   Path(run_dir), device, protocol.bootstrap, stats_reference, compute_references)


def metric_reference(metric: Metric, cache: Path, dataset_id: str, n: int, device: str = "cpu",
                     compute: bool = True):
    """What the metric compares against: None, ReferenceStats (mu/sigma) or ReferenceFeatures (rows)."""
    if not metric.needs_reference:
        return None
    make = reference_features if metric.reference_kind == "features" else reference_stats
    return make(cache, dataset_id, metric.extractor, metric.output, n, device, compute=compute)


def _npy_bytes(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(values, dtype=np.float64))
    return buf.getvalue()


def _bootstrap(metric: Metric, result: MetricResult, manifests: list[ShardManifest], cache: Path, ext_key: str,
               reference, indices: np.ndarray) -> tuple[MetricResult, np.ndarray | None]:
    """Replicates of one metric on the cell's resampled samples and the interval they give
    (``bootstrap_interval``: the metric's own valid CI if it has one, else the median-centred basic one)."""
    shards = list(_shard_features(cache, ext_key, metric.output, manifests, metric.extractor))
    try:
        values = metric.shard_replicates(shards, reference, indices)
    except ShardError:
        raise
    except HarnessError as err:  # e.g. too large to resample in memory: keep the metric's own CI, say why
        return replace(result, details={**result.details, "bootstrap_skipped": str(err)}), None
    low, high, how = bootstrap_interval(metric.name, result.value, (result.ci_low, result.ci_high), values,
                                         metric.value_range)
    if result.ci_low is not None and result.ci_high is not None:  # its own interval: pair at its spread
        values = calibrated_replicates(result.value, low, high, values)
    return replace(result, ci_low=low, ci_high=high, details={**result.details, "ci_method": how}), values


def _cached(cache: Path, key: str, compute: Callable[[], tuple[MetricResult, np.ndarray | None]]
            ) -> tuple[MetricResult, np.ndarray | None, str, bool]:
    """(result, replicates, created_at, computed now) of the score-cache entry ``key``, computing it if absent."""
    path = cache / "scores" / f"{key}.json"
    if path.exists():
        saved = json.loads(path.read_text())
        replicates = None
        if saved.get("replicates"):
            replicates = np.load(cache / "scores" / saved["replicates"], allow_pickle=False)
        return MetricResult(**saved["result"]), replicates, saved["created_at"], False
    result, replicates = compute()
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    if replicates is not None:  # written before the json, which marks the entry complete
        atomic_write_bytes(cache / "scores" / f"{key}.npy", _npy_bytes(replicates))
    atomic_write_json(path, {"result": asdict(result), "created_at": created_at,
                             "replicates": f"{key}.npy" if replicates is not None else None})
    fault_point("after_score")
    return result, replicates, created_at, True


def _measured_entry(ctx: ScoreContext, metric: Metric, cell: Any, manifests: list[ShardManifest],
                    indices: np.ndarray | None) -> tuple[str, str, str, Callable[[], tuple[MetricResult, Any]]]:
    """(extractor key, reference id, score-cache key, compute) of a metric that reads the cell's features.

    ``ctx.stats_reference``: imported mu/sigma used instead of the dataset's statistics by every mu/sigma
    reference metric (the metric refuses it if its extractor differs)."""
    cache = ctx.cache
    ext_key = get_extractor(metric.extractor).spec.key
    imported = ctx.stats_reference is not None and metric.needs_reference and metric.reference_kind == "stats"
    reference = ctx.stats_reference if imported else metric_reference(metric, cache, cell.dataset.id,
                                                                      ctx.reference_n, ctx.device,
                                                                      ctx.compute_references)
    reference_id = reference.reference_id if reference is not None else ""
    key = digest({"metric": metric.name, "variant": metric.variant, "cell": cell.cell_id, "extractor": ext_key,
                  "shards": [m.content_digest for m in manifests], "reference": reference_id,
                  "version": __version__, "bootstrap": ctx.bootstrap, "ci": CI_METHOD}, length=24)

    def compute() -> tuple[MetricResult, np.ndarray | None]:
        result = metric.compute(_shard_features(cache, ext_key, metric.output, manifests, metric.extractor), reference)
        if not np.isfinite(result.value):
            raise ShardError(f"cell {cell.cell_id}: metric {metric.name} came out {result.value}; not recorded")
        if indices is None:
            return result, None
        return _bootstrap(metric, result, manifests, cache, ext_key, reference, indices)

    return ext_key, reference_id, key, compute


def score_cell(ctx: ScoreContext, directory: Path, guidance: str) -> tuple[list[MetricRow], int]:
    """Metric rows of one cell; returns (rows, how many were computed rather than read from cache).

    With ``ctx.bootstrap`` = B > 0 the replicates are written to ``<run_dir>/bootstrap/<cell>/<metric>.npy`` too.
    ``guidance``: the plan's guidance mechanism of the cell, recorded in its rows. A composite
    (``Metric.components``) is computed from the results and replicates of its components, which must come before
    it in ``ctx.metrics``."""
    run, metric_names, cache, bootstrap, run_dir = ctx.run, ctx.metrics, ctx.cache, ctx.bootstrap, ctx.run_dir
    cell = read_cell(directory)
    manifests = cell_manifests(directory, cell, ctx.shard_size)
    samples = [s for m in manifests for s in m.samples]
    indices = bootstrap_indices(cell.cell_id, len(samples), bootstrap) if bootstrap and metric_names else None
    rows, computed = [], 0
    scored: dict[str, Scored] = {}
    for name in metric_names:
        metric = get_metric(name)
        if metric.components:  # from its components' results on this cell (harness/run/composites.py)
            key, compute = composite_entry(metric, cell.cell_id, scored, bootstrap)
            ext_key, reference_id = "", scored[metric.components[0]].reference_id
        else:
            ext_key, reference_id, key, compute = _measured_entry(ctx, metric, cell, manifests, indices)
        result, replicates, created_at, new = _cached(cache, key, compute)
        computed += new
        scored[name] = Scored(key, result, replicates, reference_id)
        if replicates is not None:
            atomic_write_bytes(replicate_path(run_dir, cell.cell_id, name), _npy_bytes(replicates))
        if metric.per_class:  # per-class metrics: their tidy one-row-per-class table beside the row
            from harness.metrics.per_class import write_per_class_table

            write_per_class_table(run_dir, cell.cell_id, name, metric.variant, result.details["per_class"])
        rows.append(MetricRow(
            run=run, cell_id=cell.cell_id, model=cell.model.name, family=cell.model.family,
            steps=cell.settings.steps, cfg=cell.settings.cfg, guidance=guidance,
            dataset=cell.dataset.id, n=cell.n, seed_policy=f"sha256(seed={cell.seed},dataset,index)",
            metric=name, variant=metric.variant, value=float(result.value), ci_low=result.ci_low,
            ci_high=result.ci_high, higher_is_better=metric.higher_is_better,
            nfe_mean=float(np.mean([s.nfe for s in samples])),
            sec_per_image=float(np.mean([s.seconds for s in samples])), extractor_id=ext_key,
            reference_id=reference_id, harness_version=__version__, created_at=created_at))
    return rows, computed
