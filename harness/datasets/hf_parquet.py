"""The Hugging Face datasets layout of ImageNet-1k validation: ``validation-*.parquet`` shards, each row an
``image`` struct (``bytes``, ``path``) and an integer ``label`` (the standard 0..999 ids).

Rows keep the parquet order (shard name, then row): the N-generated = N-real pairing needs the label
histogram, not the folder layout's class-contiguous order. A row is addressed as ``<shard>#<row>``; reading
a batch reads only the row groups that hold it. Manifest entries record the shard's byte size.

Kept beside the 🤗 datasets route (``hf_hub.py``): ``datasets.load_dataset`` would first copy the shards into its
arrow cache, and ``imagenet-val``'s digest and cell ids are defined on (shard, row, byte size, label), which
that route does not reproduce; an ``hf:`` spec on the same shards is the library route, with its own digest.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from harness.errors import HarnessError

SHARD_PATTERNS = ("validation-*.parquet", "data/validation-*.parquet")


def parquet_shards(root: Path) -> list[Path]:
    for pattern in SHARD_PATTERNS:
        shards = sorted(root.glob(pattern))
        if shards:
            return shards
    return []


def scan_parquet(root: Path, shards: list[Path], num_classes: int, where: str
                 ) -> list[tuple[int, str, int]]:
    """(label, '<shard>#<row>', shard byte size) per row, validated: labels present and in range, paths unique."""
    import pyarrow.parquet as pq

    entries, seen = [], {}
    for shard in shards:
        try:
            table = pq.ParquetFile(shard).read(columns=["label", "image.path"]).to_pydict()
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise HarnessError(f"{where}{shard}: expected parquet with columns 'image' (bytes, path) and 'label': "
                               f"{err}") from err
        size, rel = shard.stat().st_size, shard.relative_to(root).as_posix()
        for row, (label, image) in enumerate(zip(table["label"], table["image"], strict=True)):
            name = (image or {}).get("path")
            if label is None or not 0 <= int(label) < num_classes:
                raise HarnessError(f"{where}{shard} row {row} ({name}): label {label!r} is missing or outside "
                                   f"0..{num_classes - 1}")
            if name:
                if name in seen:
                    raise HarnessError(f"{where}{shard} row {row}: duplicate file {name!r} (also {seen[name]})")
                seen[name] = f"{rel} row {row}"
            entries.append((int(label), f"{rel}#{row}", size))
    return entries


def read_rows(root: Path, addresses: Sequence[str]) -> list[Image.Image]:
    """Decoded images of ``<shard>#<row>`` addresses, reading only the row groups that hold them."""
    import pyarrow.parquet as pq

    by_shard: dict[str, list[tuple[int, int]]] = {}
    for position, address in enumerate(addresses):
        shard, row = address.rsplit("#", 1)
        by_shard.setdefault(shard, []).append((int(row), position))
    out: list[Image.Image | None] = [None] * len(addresses)
    for shard, wanted in by_shard.items():
        file = pq.ParquetFile(root / shard)
        starts = np.cumsum([0] + [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)])
        groups = sorted({int(np.searchsorted(starts, row, side="right") - 1) for row, _ in wanted})
        images = file.read_row_groups(groups, columns=["image"]).column("image").to_pylist()
        offset = {g: int(sum(starts[h + 1] - starts[h] for h in groups if h < g)) for g in groups}
        for row, position in wanted:
            group = int(np.searchsorted(starts, row, side="right") - 1)
            record = images[offset[group] + row - int(starts[group])]
            try:
                out[position] = Image.open(io.BytesIO(record["bytes"]))
            except (OSError, TypeError) as err:
                raise HarnessError(f"{root / shard} row {row}: cannot decode image: {err}") from err
    return out  # type: ignore[return-value]
