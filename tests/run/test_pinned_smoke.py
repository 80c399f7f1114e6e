"""Moving code never changes a result: the smoke protocol's cell ids, PNG bytes and parquet values are pinned.

How the pins were obtained: ``harness run protocols/smoke.yaml`` on main at commit 79988e7 (before the
modules moved into subpackages), in a scratch copy of the repository, on CPU; the image digests are sha256
of each cell's ``images/*.png`` files concatenated in name order, and the values are read from
``results.parquet``. A change that alters them on purpose (e.g. a new ``SAMPLING_VERSION``) updates them here
and says why in its commit.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]

# cell id -> sha256 of its 6 PNGs concatenated in name order
CELLS = {
    "b216fcba0a2aef61": "9173eacd8f5bccd9dc7746fa6f1e5df138394f84c96cfafd0f5469266ec4c956",
    "6018146db30603e8": "242fb262d49381d64ee1fa63ed5c1cabe7571a1d20b803047ec437caeef94110",
    "4b87a267f6ea89f2": "13dab4f947c0c5fad3bc678fe392b48a811d1dac743f3e8c36c8b88d211d8850",
    "bfe2c53bc287e487": "7369b90ee77e6d3bf0c5166c492d8b1dcaa248d70df0b0c7ed50822f92c36e95",
}
FIRST_PNG = ("6018146db30603e8", "a02c3941622f3c3a8fbde5d40dbd04374468dffc0867d64640ad6bc38113cbdf")
# (cell id, metric) -> (value, ci_low, ci_high); FID on 6 random-init samples, so large and meaningless
VALUES = {
    ("b216fcba0a2aef61", "fid"): (449.299264, 432.096866, 460.534085),
    ("6018146db30603e8", "fid"): (417.581993, 400.589619, 427.850006),
    ("4b87a267f6ea89f2", "fid"): (455.198860, 438.776779, 471.667280),
    ("bfe2c53bc287e487", "fid"): (433.631485, 422.296361, 445.077759),
    **{(cell, "class_alignment"): (0.166667, 0.030053, 0.563503) for cell in CELLS},
}
EXTRACTOR_IDS = {"fid": "af6d7a79c446f6a971039b96", "class_alignment": "faba3490dbf9616dd20cd490"}
REFERENCE_ID = "908a37175f81245c"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, shared_cache) -> Path:
    run = tmp_path_factory.mktemp("pinned") / "run"
    env = {**os.environ, "HARNESS_CACHE": str(shared_cache), "HARNESS_PROGRESS": "0"}
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "protocols/smoke.yaml", "--executor", "debug",
                           "--results", str(run)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return run


def cell_digest(cell: Path) -> str:
    h = hashlib.sha256()
    for png in sorted((cell / "images").glob("*.png")):
        h.update(png.read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_cell_ids_and_image_bytes_are_pinned(smoke):
    cells = sorted(p for p in (smoke / "cells").iterdir())
    assert {c.name: cell_digest(c) for c in cells} == CELLS
    cell, png = FIRST_PNG
    assert hashlib.sha256((smoke / "cells" / cell / "images" / "0000000.png").read_bytes()).hexdigest() == png


@pytest.mark.slow
def test_parquet_values_are_pinned(smoke):
    frame = pd.read_parquet(smoke / "results.parquet")
    got = {(r.cell_id, r.metric): (r.value, r.ci_low, r.ci_high) for r in frame.itertuples()}
    assert got.keys() == VALUES.keys()
    for key, want in VALUES.items():
        assert got[key] == pytest.approx(want, abs=1e-6), key  # pins printed to 6 decimals
    assert {r.metric: r.extractor_id for r in frame.itertuples()} == EXTRACTOR_IDS
    assert set(frame[frame.metric == "fid"].reference_id) == {REFERENCE_ID}
