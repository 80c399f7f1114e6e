"""The stages after generation: extract (per shard, cached by content) and score (per cell × metric).

Feature files are keyed by (extractor spec key, shard content digest); reference statistics by
(dataset digest, extractor spec key, output, n); scores by everything that feeds them. So a re-run computes
nothing that already exists, and any changed input produces a new key instead of a stale reuse.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from harness import __version__
from harness.composite import load_replicates, replicate_path  # noqa: F401 - load_replicates is re-exported
from harness.datasets import get_dataset
from harness.errors import HarnessError, ShardError
from harness.faults import fault_point
from harness.features import get_extractor
from harness.features.base import Extractor
from harness.hashing import digest
from harness.metrics import get_metric
from harness.metrics.base import Metric, MetricResult, ShardFeatures
from harness.metrics.bootstrap import CI_METHOD, bootstrap_indices, bootstrap_interval
from harness.metrics.fid import StreamingStats
from harness.progress import progress_bar
from harness.store import (
    atomic_write_bytes,
    atomic_write_json,
    manifest_path,
    read_cell,
    read_manifest,
    verified_images,
)
from harness.types import Cell, MetricRow, ShardManifest


def default_cache_dir() -> Path:
    env = os.environ.get("HARNESS_CACHE")
    return Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "onestep-bench"


@dataclass(frozen=True)
class ExtractTask:
    """Picklable descriptor: extract every listed extractor from one finished shard."""

    cell_dir: str
    start: int
    stop: int
    extractors: tuple[str, ...]
    cache_dir: str
    device: str = "cpu"


def feature_path(cache_dir: Path, extractor_key: str, content_digest: str) -> Path:
    return cache_dir / "features" / extractor_key / f"{content_digest}.npz"


def missing_extractors(cache: Path, extractors: tuple[str, ...], content_digest: str) -> list[str]:
    """The extractors whose features of this shard content are not cached yet."""
    return [name for name in extractors
            if not feature_path(cache, get_extractor(name).spec.key, content_digest).exists()]


_EXTRACTORS: dict[tuple[str, str], Extractor] = {}


def loaded_extractor(name: str, device: str) -> Extractor:
    if (name, device) not in _EXTRACTORS:
        ext = get_extractor(name)
        ext.load(device)
        _EXTRACTORS[(name, device)] = ext
    return _EXTRACTORS[(name, device)]


def extract_shard(task: ExtractTask) -> int:
    """Decode the shard once (verifying every PNG against its manifest), feed each missing extractor.

    Returns how many extractor outputs were computed (0 when everything was cached)."""
    directory, cache = Path(task.cell_dir), Path(task.cache_dir)
    manifest = read_manifest(manifest_path(directory, task.start, task.stop))
    missing = missing_extractors(cache, task.extractors, manifest.content_digest)
    if not missing:
        return 0
    images = verified_images(directory, manifest)
    for name in missing:
        ext = loaded_extractor(name, task.device)
        outputs = ext.extract(images)
        buf = io.BytesIO()
        np.savez(buf, **outputs)
        atomic_write_bytes(feature_path(cache, ext.spec.key, manifest.content_digest), buf.getvalue())
        fault_point("after_feature")
    return len(missing)


def cell_manifests(directory: Path, cell: Cell, shard_size: int) -> list[ShardManifest]:
    """All manifests of a cell, verified complete: sample counts must match the plan exactly."""
    manifests = []
    for start in range(0, cell.n, shard_size):
        path = manifest_path(directory, start, min(start + shard_size, cell.n))
        if not path.exists():
            raise ShardError(f"{path}: shard not generated; run `harness run` to finish it")
        manifests.append(read_manifest(path))
    count = sum(len(m.samples) for m in manifests)
    if count != cell.n:
        raise ShardError(f"{directory}: {count} samples on disk but the plan asks for {cell.n}")
    return manifests


def _shard_features(cache: Path, extractor_key: str, output: str,
                    manifests: list[ShardManifest]) -> Iterator[ShardFeatures]:
    for m in manifests:
        path = feature_path(cache, extractor_key, m.content_digest)
        with np.load(path) as data:
            feats = data[output]
        if len(feats) != len(m.samples):
            raise ShardError(f"{path}: {len(feats)} feature rows for a shard of {len(m.samples)} samples")
        if not np.isfinite(feats).all():
            raise ShardError(f"{path}: features contain NaN/Inf; refusing to score them")
        yield ShardFeatures(features=feats, labels=tuple(s.label for s in m.samples),
                            prompts=tuple(s.prompt for s in m.samples))


@dataclass(frozen=True)
class ReferenceChunkTask:
    """Picklable descriptor: feature statistics of reference images [start, stop) of one dataset."""

    dataset: str
    extractor: str
    output: str
    start: int
    stop: int
    device: str = "cpu"


# Fixed chunk boundaries: the merged float64 statistics are the same under every executor.
REFERENCE_CHUNK = 128


def reference_chunk(task: ReferenceChunkTask) -> StreamingStats:
    ext = loaded_extractor(task.extractor, task.device)
    stats = StreamingStats()
    for batch in get_dataset(task.dataset).reference_images(task.stop, batch_size=REFERENCE_CHUNK, start=task.start):
        stats.update(ext.extract(batch)[task.output].reshape(len(batch), -1))
    return stats


def feature_task(task: ExtractTask | ReferenceChunkTask) -> int | StreamingStats:
    """One entry point for the feature stage, so shards and reference chunks share one executor pass."""
    return reference_chunk(task) if isinstance(task, ReferenceChunkTask) else extract_shard(task)


def reference_path(cache: Path, dataset_id: str, extractor_name: str, output: str, n: int) -> Path:
    """(dataset content, extractor spec, output, n) → the statistics file; names play no part."""
    key = digest({"dataset": get_dataset(dataset_id).digest, "extractor": get_extractor(extractor_name).spec.key,
                  "output": output, "n": n}, length=24)
    return cache / "refstats" / f"{key}.npz"


def reference_chunks(dataset_id: str, extractor_name: str, output: str, n: int,
                     device: str = "cpu") -> list[ReferenceChunkTask]:
    return [ReferenceChunkTask(dataset_id, extractor_name, output, s, min(s + REFERENCE_CHUNK, n), device)
            for s in range(0, n, REFERENCE_CHUNK)]


def save_reference(path: Path, dataset_id: str, extractor_name: str, output: str, n: int,
                   chunks: list[StreamingStats]):
    """Merge chunk statistics in index order into the reference artefact and save it."""
    from harness.features.reference import reference_from_stats

    merged = StreamingStats()
    for part in chunks:
        merged.merge(part)
    stats = reference_from_stats(get_dataset(dataset_id), n, get_extractor(extractor_name).spec, output, merged)
    stats.save(path)
    return stats


def reference_stats(cache: Path, dataset_id: str, extractor_name: str, output: str, n: int, device: str = "cpu"):
    """Reference statistics for (dataset content, extractor spec, output, n): computed once, then loaded."""
    from harness.features.reference import ReferenceStats

    path = reference_path(cache, dataset_id, extractor_name, output, n)
    if path.exists():
        return ReferenceStats.load(path)
    chunks = []
    with progress_bar(n, f"reference stats {dataset_id} n={n} ({extractor_name}/{output})") as bar:
        for task in reference_chunks(dataset_id, extractor_name, output, n, device):
            chunks.append(reference_chunk(task))
            bar.update(task.stop - task.start)
    return save_reference(path, dataset_id, extractor_name, output, n, chunks)


def reference_features_path(cache: Path, dataset_id: str, extractor_name: str, output: str, n: int) -> Path:
    key = digest({"dataset": get_dataset(dataset_id).digest, "extractor": get_extractor(extractor_name).spec.key,
                  "output": output, "n": n, "kind": "features"}, length=24)
    return cache / "reffeatures" / f"{key}.npz"


def reference_features(cache: Path, dataset_id: str, extractor_name: str, output: str, n: int,
                       device: str = "cpu"):
    """Reference feature rows (KID, P/R) for (dataset content, extractor spec, output, n): computed once."""
    from harness.features.reference import ReferenceFeatures

    dataset, spec = get_dataset(dataset_id), get_extractor(extractor_name).spec
    path = reference_features_path(cache, dataset_id, extractor_name, output, n)
    if path.exists():
        return ReferenceFeatures.load(path)
    ext = loaded_extractor(extractor_name, device)
    parts = []
    with progress_bar(n, f"reference features {dataset_id} n={n} ({extractor_name}/{output})") as bar:
        for batch in dataset.reference_images(n, batch_size=REFERENCE_CHUNK):
            parts.append(ext.extract(batch)[output].reshape(len(batch), -1))
            bar.update(len(batch))
    rows = np.concatenate(parts)
    if len(rows) != n or not np.isfinite(rows).all():
        raise ShardError(f"dataset {dataset_id!r}: {len(rows)} reference feature rows (expected {n}) "
                         f"or non-finite values; not saved")
    features = ReferenceFeatures(rows.astype(np.float32), spec.key, dataset.digest,
                                 {"extractor": asdict(spec), "output": output, "dataset": dataset_id})
    features.save(path)
    return features


def metric_reference(metric: Metric, cache: Path, dataset_id: str, n: int, device: str = "cpu"):
    """What the metric compares against: None, ReferenceStats (mu/sigma) or ReferenceFeatures (rows)."""
    if not metric.needs_reference:
        return None
    if metric.reference_kind == "features":
        return reference_features(cache, dataset_id, metric.extractor, metric.output, n, device)
    return reference_stats(cache, dataset_id, metric.extractor, metric.output, n, device)


def _npy_bytes(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(values, dtype=np.float64))
    return buf.getvalue()


def _bootstrap(metric: Metric, result: MetricResult, manifests: list[ShardManifest], cache: Path, ext_key: str,
               reference, indices: np.ndarray) -> tuple[MetricResult, np.ndarray | None]:
    """Replicates of one metric on the cell's resampled samples and the interval they give
    (``bootstrap_interval``: the metric's own valid CI if it has one, else the median-centred basic one)."""
    shards = list(_shard_features(cache, ext_key, metric.output, manifests))
    try:
        values = metric.shard_replicates(shards, reference, indices)
    except ShardError:
        raise
    except HarnessError as err:  # e.g. too large to resample in memory: keep the metric's own CI, say why
        return replace(result, details={**result.details, "bootstrap_skipped": str(err)}), None
    low, high, how = bootstrap_interval(metric.name, result.value, (result.ci_low, result.ci_high), values,
                                         metric.value_range)
    return replace(result, ci_low=low, ci_high=high, details={**result.details, "ci_method": how}), values


def score_cell(run: str, directory: Path, shard_size: int, metric_names: tuple[str, ...], cache: Path,
               reference_n: int, capabilities_guidance: str, device: str = "cpu", bootstrap: int = 0,
               run_dir: Path | None = None, stats_reference: Any = None) -> tuple[list[MetricRow], int]:
    """Metric rows of one cell; returns (rows, how many were computed rather than read from cache).

    ``stats_reference``: imported mu/sigma (the protocol's ``reference_stats``) used instead of the dataset's
    statistics by every mu/sigma reference metric (the metric refuses it if its extractor differs).

    With ``bootstrap`` = B > 0 every metric's CI is the percentile interval of B replicates on the same
    resampled sample indices, and the replicates are written to ``<run_dir>/bootstrap/<cell>/<metric>.npy``."""
    cell = read_cell(directory)
    run_dir = Path(run_dir) if run_dir is not None else directory.parent.parent
    manifests = cell_manifests(directory, cell, shard_size)
    samples = [s for m in manifests for s in m.samples]
    indices = bootstrap_indices(cell.cell_id, len(samples), bootstrap) if bootstrap and metric_names else None
    rows, computed = [], 0
    for name in metric_names:
        metric = get_metric(name)
        ext_key = get_extractor(metric.extractor).spec.key
        imported = stats_reference is not None and metric.needs_reference and metric.reference_kind == "stats"
        reference = stats_reference if imported else metric_reference(metric, cache, cell.dataset.id, reference_n,
                                                                      device)
        reference_id = reference.reference_id if reference is not None else ""
        key = digest({"metric": name, "variant": metric.variant, "cell": cell.cell_id, "extractor": ext_key,
                      "shards": [m.content_digest for m in manifests], "reference": reference_id,
                      "version": __version__, "bootstrap": bootstrap, "ci": CI_METHOD}, length=24)
        path = cache / "scores" / f"{key}.json"
        replicates = None
        if path.exists():
            saved = json.loads(path.read_text())
            result, created_at = MetricResult(**saved["result"]), saved["created_at"]
            if saved.get("replicates"):
                replicates = np.load(cache / "scores" / saved["replicates"], allow_pickle=False)
        else:
            result = metric.compute(_shard_features(cache, ext_key, metric.output, manifests), reference)
            if not np.isfinite(result.value):
                raise ShardError(f"cell {cell.cell_id}: metric {name} came out {result.value}; not recorded")
            if indices is not None:
                result, replicates = _bootstrap(metric, result, manifests, cache, ext_key, reference, indices)
            created_at = datetime.now(UTC).isoformat(timespec="seconds")
            if replicates is not None:  # written before the json, which marks the entry complete
                atomic_write_bytes(cache / "scores" / f"{key}.npy", _npy_bytes(replicates))
            atomic_write_json(path, {"result": asdict(result), "created_at": created_at,
                                     "replicates": f"{key}.npy" if replicates is not None else None})
            fault_point("after_score")
            computed += 1
        if replicates is not None:
            atomic_write_bytes(replicate_path(run_dir, cell.cell_id, name), _npy_bytes(replicates))
        if "per_class" in result.details:  # per-class metrics: their tidy one-row-per-class table beside the row
            from harness.metrics.per_class import write_per_class_table

            write_per_class_table(run_dir, cell.cell_id, name, metric.variant, result.details["per_class"])
        rows.append(MetricRow(
            run=run, cell_id=cell.cell_id, model=cell.model.name, family=cell.model.family,
            steps=cell.settings.steps, cfg=cell.settings.cfg, guidance=capabilities_guidance,
            dataset=cell.dataset.id, n=cell.n, seed_policy=f"sha256(seed={cell.seed},dataset,index)",
            metric=name, variant=metric.variant, value=float(result.value), ci_low=result.ci_low,
            ci_high=result.ci_high, higher_is_better=metric.higher_is_better,
            nfe_mean=float(np.mean([s.nfe for s in samples])),
            sec_per_image=float(np.mean([s.seconds for s in samples])), extractor_id=ext_key,
            reference_id=reference_id, harness_version=__version__, created_at=created_at))
    return rows, computed
