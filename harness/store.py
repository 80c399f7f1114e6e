"""The run directory on disk: cell specs, images, shard manifests; atomic writes.

Layout (every name is a content hash or a sample index, never a rank or a timestamp)::

    RUN/cells/<cell_id>/cell.json                 the cell, written at plan time
    RUN/cells/<cell_id>/images/<index>.png        lossless samples
    RUN/cells/<cell_id>/shards/<start>-<stop>.json       manifest: the shard is done iff it exists
    RUN/cells/<cell_id>/shards/<start>-<stop>.journal    progress of an unfinished shard
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import BinaryIO

import numpy as np

from harness.errors import HarnessError, ShardError
from harness.hashing import sha256_bytes
from harness.images import decode_bytes
from harness.parallel import thread_map
from harness.types import Cell, DatasetRef, ModelCard, SampleRecord, SamplerSettings, ShardManifest


def _process_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; results and the shared cache must get the mode any other file would (0644 under
# umask 022), or a cache "safe to share" is unreadable to everyone else.
_FILE_MODE = 0o666 & ~_process_umask()


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write(f)`` into a temp file in the same directory, then rename: readers never see half a file.

    No fsync (10-30 ms per file on the shared CI disks): a killed process loses nothing it wrote. Only
    a power cut can leave a short file; manifests and reference statistics are verified when read and
    redone, while a damaged feature or score cache file must be deleted by hand (it is only a cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def cache_home() -> Path:
    """The harness's own folder under the user cache (``$XDG_CACHE_HOME`` or ``~/.cache``): the one default
    root of the feature/reference cache and of downloaded weights."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "onestep-bench"


def default_cache_dir() -> Path:
    """The feature/reference cache: ``$HARNESS_CACHE``, else ``cache_home()``."""
    env = os.environ.get("HARNESS_CACHE")
    return Path(env) if env else cache_home()


def ensure_writable(directory: Path, what: str = "results directory", flag: str = "--results DIR") -> None:
    """Refuse a directory we cannot write (``what``, chosen with ``flag``), before any compute is spent."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".write-probe-", delete=True)
        probe.close()
    except OSError as e:
        raise HarnessError(f"{directory}: {what} is not writable ({e.strerror}); "
                           f"choose another with {flag}") from None


def _png_chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def encode_png(image: np.ndarray) -> bytes:
    """Lossless 8-bit RGB PNG written by our own code: no metadata, filter 0, zlib level 1 (half level 6's CPU
    for ~3% larger files on generator outputs; SAMPLING_VERSION 2 onwards).

    The bytes depend only on the pixels (not on the Pillow version), so "byte-identical images" holds
    across environments, and it is ~10x faster than Pillow's encoder on small images.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"encode_png expects uint8 H x W x 3, got {image.dtype} {image.shape}")
    h, w, _ = image.shape
    rows = np.zeros((h, 1 + 3 * w), dtype=np.uint8)  # leading 0 per row = filter type "None"
    rows[:, 1:] = image.reshape(h, 3 * w)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit, colour type 2 (RGB), no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)) + _png_chunk(b"IEND", b""))


# ---- cells ---------------------------------------------------------------------------------------

def cell_to_dict(cell: Cell) -> dict:
    return {"cell_id": cell.cell_id, "model": asdict(cell.model), "settings": asdict(cell.settings),
            "dataset": asdict(cell.dataset), "seed": cell.seed, "n": cell.n,
            "sampling_version": cell.sampling_version,
            **({"resize": list(cell.resize)} if cell.resize else {})}


def cell_from_dict(d: dict) -> Cell:
    cell = Cell(model=ModelCard(**d["model"]), settings=SamplerSettings(**d["settings"]),
                dataset=DatasetRef(**d["dataset"]), seed=d["seed"], n=d["n"],
                sampling_version=d["sampling_version"],
                resize=tuple(d["resize"]) if d.get("resize") else None)
    if cell.cell_id != d["cell_id"]:
        raise ShardError(f"cell.json for {d['cell_id']} hashes to {cell.cell_id}: the file was edited "
                         f"or written by an incompatible harness version")
    return cell


def cell_dir(run_dir: Path, cell: Cell) -> Path:
    return run_dir / "cells" / cell.cell_id


def write_cell(run_dir: Path, cell: Cell) -> Path:
    d = cell_dir(run_dir, cell)
    spec = d / "cell.json"
    if not spec.exists():
        atomic_write_json(spec, cell_to_dict(cell))
    return d


def read_cell(directory: Path) -> Cell:
    path = directory / "cell.json"
    try:
        return cell_from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ShardError(f"{path}: cannot read the cell spec ({e})") from None


# ---- manifests -----------------------------------------------------------------------------------

def image_name(index: int) -> str:
    return f"images/{index:07d}.png"


def manifest_path(directory: Path, start: int, stop: int) -> Path:
    return directory / "shards" / f"{start:07d}-{stop:07d}.json"


def write_manifest(path: Path, manifest: ShardManifest) -> None:
    # Compact JSON (json's C encoder; ``indent`` falls back to the pure-Python one) and the flat records'
    # own dicts rather than asdict's deep copies: the largest Python-side cost of writing a shard.
    obj = {"cell_id": manifest.cell_id, "start": manifest.start, "stop": manifest.stop,
           "harness_version": manifest.harness_version, "content_digest": manifest.content_digest,
           "samples": [s.__dict__ for s in manifest.samples]}
    atomic_write_bytes(path, (json.dumps(obj, sort_keys=True) + "\n").encode())


def read_manifest(path: Path) -> ShardManifest:
    try:
        d = json.loads(path.read_text())
        samples = tuple(SampleRecord(**s) for s in d["samples"])
        m = ShardManifest(cell_id=d["cell_id"], start=d["start"], stop=d["stop"], samples=samples,
                          harness_version=d["harness_version"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ShardError(f"{path}: unreadable shard manifest ({e})") from None
    if [s.index for s in samples] != list(range(m.start, m.stop)):
        raise ShardError(f"{path}: manifest lists samples {[s.index for s in samples][:5]}...; "
                         f"expected indices {m.start}..{m.stop - 1}")
    return m


def file_matches(directory: Path, record: SampleRecord) -> bool:
    path = directory / record.file
    try:
        return sha256_bytes(path.read_bytes()) == record.sha256
    except OSError:
        return False


def verified_images(directory: Path, manifest: ShardManifest) -> np.ndarray:
    """Decode a shard's images, refusing any whose bytes differ from the manifest (never score garbage)."""

    def verified(rec: SampleRecord) -> np.ndarray:
        path = directory / rec.file
        try:
            data = path.read_bytes()
        except OSError:
            raise ShardError(f"{path}: listed in the manifest but missing; run `harness run` again "
                             f"to regenerate it") from None
        if sha256_bytes(data) != rec.sha256:
            raise ShardError(f"{path}: sha256 does not match its manifest (corrupt or edited); run "
                             f"`harness run` again to regenerate it")
        return decode_bytes(data, str(path))[0]  # the one decoder (harness/images.py)

    return np.stack(thread_map(verified, manifest.samples))
