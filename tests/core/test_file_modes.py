"""Results and cache files get the mode any other file gets under the umask (0644 under 022), not mkstemp's 0600:
a shared content-addressed cache must be readable by everyone who shares it."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np

from harness.references.artefacts import _atomic_savez
from harness.store import atomic_write_bytes, atomic_write_json


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_follow_the_umask_like_a_plain_file(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives under this process's umask
    written = [tmp_path / "a.bin", tmp_path / "b.json", tmp_path / "c.npz"]
    atomic_write_bytes(written[0], b"data")
    atomic_write_json(written[1], {"k": 1})
    _atomic_savez(written[2], x=np.zeros(2))
    assert _mode(plain) & 0o044, "test machine runs with a umask that hides files from group/other"
    assert [_mode(p) for p in written] == [_mode(plain)] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.json", "c.npz", "plain.txt"]  # no temp left
