"""Find an extractor's weights file in the local weights cache (no downloads, ever).

Search order: ``$HARNESS_WEIGHTS`` (default ``$XDG_CACHE_HOME/onestep-bench/weights``), then the torch
hub cache ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch``), where torch-fidelity and
``torch.hub`` leave their downloads. A missing file is an error naming the file, every place looked at
and the command that fetches it on a networked machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import HarnessError
from ..hashing import sha256_file

_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def weights_dirs() -> list[Path]:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    harness = Path(os.environ.get("HARNESS_WEIGHTS") or cache / "onestep-bench" / "weights")
    torch_home = Path(os.environ.get("TORCH_HOME") or cache / "torch")
    return [harness, torch_home / "hub" / "checkpoints"]


def find_weights(filename: str, fetch_name: str) -> Path:
    """The first existing ``filename`` in :func:`weights_dirs`, or a HarnessError saying how to get it."""
    places = weights_dirs()
    for directory in places:
        if (directory / filename).is_file():
            return directory / filename
    raise HarnessError(f"weights file {filename!r} not found in {', '.join(str(p) for p in places)}; "
                       f"run `harness weights fetch {fetch_name}` on a networked machine "
                       f"(or copy the file into $HARNESS_WEIGHTS)")


def weights_sha256(path: Path) -> str:
    """sha256 of a weights file, memoised by (path, size, mtime): specs ask for it often, hashing is slow."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = sha256_file(path)
    return _SHA_MEMO[key]
