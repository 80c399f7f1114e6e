"""Progress bars for long loops: on stderr, only on a terminal, and off with ``HARNESS_PROGRESS=0``."""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def progress_enabled() -> bool:
    return os.environ.get("HARNESS_PROGRESS", "1") != "0"


def progress_bar(total: int, desc: str, unit: str = "img", shown: bool = True) -> tqdm:
    """A tqdm bar; ``disable=None`` lets tqdm hide it when stderr is not a TTY (logs, pipes, CI)."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=None if shown and progress_enabled() else True)
