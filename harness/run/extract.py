"""The extract stage: feature rows of one finished shard per extractor, cached by (spec key, shard content).

Feature files are keyed by content, so a re-run computes nothing that already exists and any changed input
produces a new key. The content is the shard's pixels, plus every sample's prompt for an extractor that scores
(image, prompt) pairs (``Extractor.needs_prompts``, ImageReward): the same images under other prompts are
other features.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import ShardError
from harness.faults import fault_point
from harness.features import get_extractor, loaded_extractor
from harness.hashing import digest
from harness.metrics.base import ShardFeatures
from harness.store import (
    atomic_write_bytes,
    manifest_path,
    read_manifest,
    verified_images,
)
from harness.types import Cell, ShardManifest


@dataclass(frozen=True)
class ExtractTask:
    """Picklable descriptor: extract every listed extractor from one finished shard."""

    cell_dir: str
    start: int
    stop: int
    extractors: tuple[str, ...]
    cache_dir: str
    device: str = "cpu"

    @property
    def needs(self) -> str:
        """The generation work item this task reads (a shard resubmitted now resubmits its extraction too)."""
        return f"{Path(self.cell_dir).name}/{self.start:07d}-{self.stop:07d}"

    @property
    def label(self) -> str:
        return f"extract/{self.needs}"


def feature_path(cache_dir: Path, extractor_key: str, content_digest: str) -> Path:
    return cache_dir / "features" / extractor_key / f"{content_digest}.npz"


def features_digest(manifest: ShardManifest, extractor: str) -> str:
    """What a shard's cached features of ``extractor`` are keyed by: its pixels, and its prompts when the
    extractor reads them."""
    if not get_extractor(extractor).needs_prompts:
        return manifest.content_digest
    return digest({"pixels": manifest.content_digest, "prompts": [s.prompt for s in manifest.samples]}, length=24)


def missing_extractors(cache: Path, extractors: tuple[str, ...], manifest: ShardManifest) -> list[str]:
    """The extractors whose features of this shard's content are not cached yet."""
    return [name for name in extractors
            if not feature_path(cache, get_extractor(name).spec.key, features_digest(manifest, name)).exists()]


def extract_shard(task: ExtractTask) -> int:
    """Decode the shard once (verifying every PNG against its manifest), feed each missing extractor.

    Returns how many extractor outputs were computed (0 when everything was cached)."""
    directory, cache = Path(task.cell_dir), Path(task.cache_dir)
    path = manifest_path(directory, task.start, task.stop)
    if not path.exists():
        raise ShardError(f"{path}: shard not generated (its generation job did not finish); run the same "
                         f"`harness run` again to generate and extract it")
    manifest = read_manifest(path)
    missing = missing_extractors(cache, task.extractors, manifest)
    if not missing:
        return 0
    images = verified_images(directory, manifest)
    for name in missing:
        ext = loaded_extractor(name, task.device)
        if ext.needs_prompts:  # the extractor refuses, by name, a sample without one
            outputs = ext.extract(images, prompts=[s.prompt for s in manifest.samples])
        else:
            outputs = ext.extract(images)
        buf = io.BytesIO()
        np.savez(buf, **outputs)
        atomic_write_bytes(feature_path(cache, ext.spec.key, features_digest(manifest, name)), buf.getvalue())
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


def _shard_features(cache: Path, extractor_key: str, output: str, manifests: list[ShardManifest],
                    extractor: str | None = None) -> Iterator[ShardFeatures]:
    """Each shard's cached ``output`` rows with its labels and prompts; ``extractor`` (its registry name) keys
    the files of an extractor that reads prompts (``features_digest``)."""
    for m in manifests:
        path = feature_path(cache, extractor_key, features_digest(m, extractor) if extractor else m.content_digest)
        with np.load(path) as data:
            feats = data[output]
        if len(feats) != len(m.samples):
            raise ShardError(f"{path}: {len(feats)} feature rows for a shard of {len(m.samples)} samples")
        if not np.isfinite(feats).all():
            raise ShardError(f"{path}: features contain NaN/Inf; refusing to score them")
        yield ShardFeatures(features=feats, labels=tuple(s.label for s in m.samples),
                            prompts=tuple(s.prompt for s in m.samples))
