"""The reference cache: statistics and feature rows of a dataset's real images, computed once per content key.

A file is keyed by (dataset digest, extractor spec key, output, n), names play no part, so a changed dataset
or extractor gets a new file instead of a stale reuse. Chunk boundaries are fixed, so the merged float64
statistics are the same under every executor.
"""

from __future__ import annotations

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
    merged = StreamingStats()
    for part in chunks:
        merged.merge(part)
    stats = reference_from_stats(get_dataset(dataset_id), n, get_extractor(extractor_name).spec, output, merged)
    stats.save(path)
    return stats


def reference_stats(cache: Path, dataset_id: str, extractor_name: str, output: str, n: int, device: str = "cpu"):
    """Reference statistics for (dataset content, extractor spec, output, n): computed once, then loaded."""
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
