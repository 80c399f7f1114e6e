"""Per-sample seeds and the generate task: one ShardTask → PNGs + a manifest, resumable at any point.

Resume protocol: each finished sample is first written as a PNG (atomic rename), then appended to the
shard's journal (one JSON line, fsync'd). A restarted task keeps exactly the journal entries whose
PNG still hashes to the recorded sha256 and regenerates the rest. The manifest is written last,
atomically, and the journal removed: a shard is done iff its manifest exists and verifies.

Generator calls are the cell's aligned batches (``batch_spans``), never padded: a missing sample is
regenerated in its whole batch, so its bytes are the same after a kill, under any shard size or executor.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from harness import __version__
from harness.datasets import get_dataset
from harness.errors import GenerationError, ShardError
from harness.faults import fault_point
from harness.hashing import sha256_bytes
from harness.locks import exclusive
from harness.models.adapters import Adapter, get_adapter_class
from harness.plan.resize import apply_resize
from harness.store import encode_png, file_matches, image_name, manifest_path, read_cell, read_manifest, write_manifest
from harness.types import Cell, SampleOutput, SampleRecord, SampleRequest, ShardManifest, ShardTask


def sample_seed(protocol_seed: int, dataset_id: str, index: int) -> int:
    """Seed of sample ``index``: a hash of (protocol seed, dataset, index), never of rank, batch or shard."""
    h = hashlib.sha256(f"onestep-bench/v1:{protocol_seed}:{dataset_id}:{index}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def requests_for(cell: Cell, indices: list[int]) -> list[SampleRequest]:
    dataset = get_dataset(cell.dataset.id)
    return [SampleRequest(index=i, seed=sample_seed(cell.seed, cell.dataset.id, i), settings=cell.settings,
                          label=dataset.label_for(i), prompt=dataset.prompt_for(i)) for i in indices]


# Adapters stay loaded for the life of a worker process: shards of one model reuse them.
_ADAPTERS: dict[tuple[str, str], Adapter] = {}
# One load at a time per process: two threads building the same random-init model at once would interleave
# their draws from torch's global RNG and get different weights (an executor may run tasks on threads).
_ADAPTERS_LOCK = threading.Lock()


def loaded_adapter(cell: Cell, device: str) -> Adapter:
    key = (cell.model.weights_digest + repr(sorted(cell.model.params.items())), device)
    with _ADAPTERS_LOCK:
        if key not in _ADAPTERS:
            adapter = get_adapter_class(cell.model.family)(cell.model)
            adapter.load(device)
            _ADAPTERS[key] = adapter
        return _ADAPTERS[key]


def batch_spans(start: int, stop: int, n: int, batch_size: int) -> list[tuple[int, int]]:
    """The generator calls covering samples [start, stop) of a cell of ``n``: batch k is always
    [k * batch_size, (k + 1) * batch_size) clipped to [0, n), aligned to absolute sample indices, so which
    samples share a call (and the call's row count) never depends on the shard layout or a resume."""
    first, last = start // batch_size, -(-stop // batch_size)
    return [(k * batch_size, min((k + 1) * batch_size, n)) for k in range(first, last)]


def wasted_rows(start: int, stop: int, n: int, batch_size: int) -> int:
    """Rows a fresh shard [start, stop) generates but does not keep (a batch cut by a shard edge)."""
    return sum(b - a for a, b in batch_spans(start, stop, n, batch_size)) - (stop - start)


def check_image(image: np.ndarray, index: int, resolution: int) -> None:
    """Refuse what must never be written: wrong shape/dtype, constant frames (e.g. all black)."""
    if image.dtype != np.uint8 or image.shape != (resolution, resolution, 3):
        raise GenerationError(f"sample {index}: generator returned {image.dtype} {image.shape}; "
                              f"expected uint8 ({resolution}, {resolution}, 3)")
    if image.min() == image.max():
        raise GenerationError(f"sample {index}: generator returned a constant image (every pixel "
                              f"{int(image.flat[0])}); refusing to write it")


@dataclass(frozen=True)
class ShardResult:
    shard: str
    cell_id: str
    generated: int
    reused: int


def _read_journal(path: Path, directory: Path) -> dict[int, SampleRecord]:
    done: dict[int, SampleRecord] = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            rec = SampleRecord(**json.loads(line))
        except (ValueError, TypeError):
            continue  # a line cut short by a kill: that sample is simply regenerated
        if file_matches(directory, rec):
            done[rec.index] = rec
    return done


def _write_file(path: str, data: bytes) -> None:
    """os.open/os.write: half the CPU of Path.write_bytes here (no buffered-IO object, fstat, isatty or seek
    per file), which is most of what the harness adds to a tiny generator's time."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _write_batch(directory: Path, journal, requests: list[SampleRequest], outputs: list[SampleOutput],
                 per_image: float) -> dict[int, SampleRecord]:
    """Write a checked batch: each PNG, then its journal line (flushed)."""
    written = {}
    for req, out in zip(requests, outputs, strict=True):
        data = encode_png(out.image)
        rec = SampleRecord(index=req.index, seed=req.seed, label=req.label, prompt=req.prompt,
                           file=image_name(req.index), sha256=sha256_bytes(data), nfe=out.nfe,
                           seconds=round(per_image, 6))
        # A plain write is enough: the journal line comes after it and records the sha256, so a PNG
        # cut short by a kill is never trusted, and nothing reads PNGs before the manifest exists.
        _write_file(os.path.join(directory, rec.file), data)
        fault_point("after_png")
        journal.write(json.dumps(rec.__dict__) + "\n")  # flat dataclass: no need for asdict's deep copy
        journal.flush()
        fault_point("after_journal")
        written[req.index] = rec
    # No fsync here: a killed process loses nothing it flushed, and after a power loss every journal
    # line is re-verified against its PNG's sha256 anyway. (fsync per batch cost up to 25% on a tiny model.)
    return written


def _nfe_is_honest(reported: int, expected: int | None) -> bool:
    """Fixed-step samplers must report exactly their declared NFE; adaptive ones (None) at least one."""
    return reported == expected if expected is not None else isinstance(reported, int) and reported >= 1


def generate_shard(task: ShardTask) -> ShardResult:
    """The generate task (same function under every executor). Idempotent and resumable.

    Holds the shard's claim while it works: a second process on the same shard waits, then finds it done."""
    mpath = manifest_path(Path(task.cell_dir), task.start, task.stop)
    with exclusive(mpath.with_suffix(".lock")):
        return _generate_claimed_shard(task)


def _generate_claimed_shard(task: ShardTask) -> ShardResult:
    directory = Path(task.cell_dir)
    cell = read_cell(directory)
    mpath = manifest_path(directory, task.start, task.stop)
    journal = mpath.with_suffix(".journal")
    done: dict[int, SampleRecord] = {}
    if mpath.exists():
        try:
            manifest = read_manifest(mpath)
            done = {r.index: r for r in manifest.samples if file_matches(directory, r)}
        except ShardError:
            done = {}
        if len(done) == task.stop - task.start:
            return ShardResult(task.name, cell.cell_id, generated=0, reused=len(done))
        mpath.unlink()  # damaged: regenerate what fails verification, rewrite the manifest
    done.update({i: r for i, r in _read_journal(journal, directory).items() if i not in done})
    todo = [i for i in range(task.start, task.stop) if i not in done]
    if todo:
        adapter = loaded_adapter(cell, task.device)
        resolution = adapter.capabilities.resolution
        expected_nfe = adapter.expected_nfe(cell.settings)
        (directory / "images").mkdir(exist_ok=True)
        journal.parent.mkdir(parents=True, exist_ok=True)
        with open(journal, "a") as jf:
            for a, b in batch_spans(task.start, task.stop, cell.n, task.batch_size):
                keep = [i for i in range(max(a, task.start), min(b, task.stop)) if i not in done]
                if not keep:
                    continue
                # The whole aligned batch is generated, so a sample always shares its call with the same
                # neighbours whatever the shard layout or resume point; only rows outside this shard or
                # already on disk are dropped (none when shards are whole batches and nothing was killed).
                requests = requests_for(cell, list(range(a, b)))
                t0 = time.perf_counter()
                outputs = adapter.sample(requests)
                per_kept = (time.perf_counter() - t0) / len(keep)  # what each kept sample really cost
                kept = [(requests[i - a], outputs[i - a]) for i in keep]
                for req, out in kept:
                    check_image(out.image, req.index, resolution)  # the native image, before any resize
                    if not _nfe_is_honest(out.nfe, expected_nfe):
                        declared = "adaptive (>= 1)" if expected_nfe is None else expected_nfe
                        raise GenerationError(f"sample {req.index}: adapter {cell.model.family!r} reported NFE "
                                              f"{out.nfe} but declares {declared} for {cell.settings}")
                outs = [o for _, o in kept]
                if cell.resize is not None:
                    outs = [replace(o, image=apply_resize(o.image, cell.resize)) for o in outs]
                done.update(_write_batch(directory, jf, [r for r, _ in kept], outs, per_kept))
    fault_point("before_manifest")
    samples = tuple(done[i] for i in range(task.start, task.stop))
    write_manifest(mpath, ShardManifest(cell_id=cell.cell_id, start=task.start, stop=task.stop,
                                        samples=samples, harness_version=__version__))
    journal.unlink(missing_ok=True)
    return ShardResult(task.name, cell.cell_id, generated=len(todo), reused=len(samples) - len(todo))


def shard_is_complete(task: ShardTask) -> bool:
    """True when the manifest exists and every PNG it lists still hashes to its recorded sha256."""
    path = manifest_path(Path(task.cell_dir), task.start, task.stop)
    if not path.exists():
        return False
    try:
        manifest = read_manifest(path)
    except ShardError:
        return False
    return all(file_matches(Path(task.cell_dir), r) for r in manifest.samples)
