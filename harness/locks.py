"""Per-shard claim: at most one process generates a shard at a time (two launchers, a requeued Slurm task
overlapping its previous run). An advisory ``flock`` is released by the kernel when its holder dies, so a
SIGKILLed or preempted worker never leaves a stale claim behind."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Block until this process holds ``lock_path`` exclusively (the file itself is left in place, empty)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
