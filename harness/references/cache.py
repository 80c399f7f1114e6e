"""The reference cache: statistics and feature rows of a dataset's real images, computed once per content key.

A file is keyed by (dataset digest, extractor spec key, output, n), names play no part, so a changed dataset
or extractor gets a new file instead of a stale reuse. Both kinds are assembled from chunks of feature rows
saved under ``refchunks/`` (the run's reference stage extracts them in parallel under any executor); chunk
boundaries are fixed, so the merged float64 statistics are the same under every executor. The chunks may be
deleted once the artefacts exist (a new n or kind re-extracts what it needs).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from harness.datasets import get_dataset
from harness.errors import ShardError
from harness.features import get_extractor, loaded_extractor
from harness.hashing import digest
from harness.progress import progress_bar
from harness.references.artefacts import ReferenceFeatures, ReferenceStats, reference_from_stats
from harness.references.stats import StreamingStats
from harness.store import atomic_write_bytes


@dataclass(frozen=True)
class ReferenceChunkTask:
    """Picklable descriptor: the feature rows of reference images [start, stop) of one dataset, saved to the
    cache. Statistics (FID-like) and feature-row references (KID, P/R) of that output are assembled from the
    same chunks, so no executor extracts a reference twice, and a requeued job redoes only missing chunks."""

    dataset: str
    extractor: str
    output: str
    start: int
    stop: int
    cache_dir: str
    device: str = "cpu"

    @property
    def label(self) -> str:
        return f"reference/{self.dataset}/{self.extractor}/{self.output}/{self.start:07d}-{self.stop:07d}"


# Fixed chunk boundaries: the merged float64 statistics are the same under every executor.
REFERENCE_CHUNK = 128


def chunk_path(cache: Path, dataset_id: str, extractor_name: str, output: str, start: int, stop: int) -> Path:
    """(dataset content, extractor spec, output, index range) → the saved rows of one chunk."""
    key = digest({"dataset": get_dataset(dataset_id).digest, "extractor": get_extractor(extractor_name).spec.key,
                  "output": output}, length=24)
    return cache / "refchunks" / key / f"{start:07d}-{stop:07d}.npy"


def _task_path(task: ReferenceChunkTask) -> Path:
    return chunk_path(Path(task.cache_dir), task.dataset, task.extractor, task.output, task.start, task.stop)


def reference_chunk(task: ReferenceChunkTask) -> str:
    """Extract and save one chunk (skipped when saved already); returns its path."""
    path = _task_path(task)
    if path.exists():
        return str(path)
    ext = loaded_extractor(task.extractor, task.device)
    parts = [ext.extract(batch)[task.output].reshape(len(batch), -1)
             for batch in get_dataset(task.dataset).reference_images(task.stop, batch_size=REFERENCE_CHUNK,
                                                                     start=task.start)]
    rows = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    if len(rows) != task.stop - task.start or not np.isfinite(rows).all():
        raise ShardError(f"dataset {task.dataset!r}: {len(rows)} reference feature rows for images "
                         f"[{task.start}, {task.stop}) or non-finite values ({task.extractor}/{task.output}); "
                         f"not saved")
    buf = io.BytesIO()
    np.save(buf, rows, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)


def reference_chunks(dataset_id: str, extractor_name: str, output: str, n: int, cache: Path | str = "",
                     device: str = "cpu") -> list[ReferenceChunkTask]:
    return [ReferenceChunkTask(dataset_id, extractor_name, output, s, min(s + REFERENCE_CHUNK, n), str(cache),
                               device) for s in range(0, n, REFERENCE_CHUNK)]


def missing_chunks(cache: Path, dataset_id: str, extractor_name: str, output: str, n: int,
                   device: str = "cpu") -> list[ReferenceChunkTask]:
    return [t for t in reference_chunks(dataset_id, extractor_name, output, n, cache, device)
            if not _task_path(t).exists()]


def _chunk_rows(cache: Path, dataset_id: str, extractor_name: str, output: str, n: int, device: str,
                compute: bool) -> Iterator[np.ndarray]:
    """Each chunk's rows in index order, extracting missing chunks when ``compute`` (else refusing them)."""
    todo = missing_chunks(cache, dataset_id, extractor_name, output, n, device)
    if todo and not compute:
        raise ShardError(f"reference {dataset_id} ({extractor_name}/{output}, n={n}): {len(todo)} chunk(s) of "
                         f"reference features missing (first: images {todo[0].start}-{todo[0].stop}); run the "
                         f"same `harness run` again to extract them")
    with progress_bar(sum(t.stop - t.start for t in todo), f"reference {dataset_id} n={n} "
                      f"({extractor_name}/{output})") as bar:
        for task in todo:
            reference_chunk(task)
            bar.update(task.stop - task.start)
    for task in reference_chunks(dataset_id, extractor_name, output, n, cache, device):
        yield np.load(_task_path(task), allow_pickle=False)


def reference_path(cache: Path, dataset_id: str, extractor_name: str, output: str, n: int) -> Path:
    """(dataset content, extractor spec, output, n) → the statistics file; names play no part."""
    key = digest({"dataset": get_dataset(dataset_id).digest, "extractor": get_extractor(extractor_name).spec.key,
                  "output": output, "n": n}, length=24)
    return cache / "refstats" / f"{key}.npz"


def reference_stats(cache: Path, dataset_id: str, extractor_name: str, output: str, n: int, device: str = "cpu",
                    compute: bool = True) -> ReferenceStats:
    """Reference statistics for (dataset content, extractor spec, output, n): assembled once from the chunks
    (merged in index order, so every executor gets the same float64 statistics), then loaded.
    ``compute=False``: refuse instead of extracting missing chunks (the collect step)."""
    path = reference_path(cache, dataset_id, extractor_name, output, n)
    if path.exists():
        return ReferenceStats.load(path)
    merged = StreamingStats()
    for rows in _chunk_rows(cache, dataset_id, extractor_name, output, n, device, compute):
        part = StreamingStats()
        part.update(rows)
        merged.merge(part)
    stats = reference_from_stats(get_dataset(dataset_id), n, get_extractor(extractor_name).spec, output, merged)
    stats.save(path)
    return stats


def reference_features_path(cache: Path, dataset_id: str, extractor_name: str, output: str, n: int) -> Path:
    key = digest({"dataset": get_dataset(dataset_id).digest, "extractor": get_extractor(extractor_name).spec.key,
                  "output": output, "n": n, "kind": "features"}, length=24)
    return cache / "reffeatures" / f"{key}.npz"


def reference_features(cache: Path, dataset_id: str, extractor_name: str, output: str, n: int,
                       device: str = "cpu", compute: bool = True) -> ReferenceFeatures:
    """Reference feature rows (KID, P/R) for (dataset content, extractor spec, output, n): assembled once from
    the chunks, then loaded. ``compute=False``: refuse instead of extracting missing chunks."""
    dataset, spec = get_dataset(dataset_id), get_extractor(extractor_name).spec
    path = reference_features_path(cache, dataset_id, extractor_name, output, n)
    if path.exists():
        return ReferenceFeatures.load(path)
    rows = np.concatenate(list(_chunk_rows(cache, dataset_id, extractor_name, output, n, device, compute)))
    features = ReferenceFeatures(rows.astype(np.float32), spec.key, dataset.digest,
                                 {"extractor": asdict(spec), "output": output, "dataset": dataset_id})
    features.save(path)
    return features
