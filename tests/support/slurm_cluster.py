"""Session fixture: a real single-node Slurm (slurm/testcluster.sh), or a skip that says why it cannot start.

Import it into a test module with ``from slurm_cluster import slurm_cluster  # noqa: F401``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "slurm" / "testcluster.sh"
CANNOT_START = 77  # the script's "Slurm cannot be started here" status


def _script(command: str, slurm_dir: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command], env={**os.environ, "SLURM_DIR": str(slurm_dir)},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Path]:
    """Starts munged + slurmctld + slurmd for the session; yields SLURM_DIR with SLURM_CONF and PATH exported."""
    slurm_dir = Path(tempfile.mkdtemp(prefix="harness-slurm-"))
    try:
        started = _script("start", slurm_dir, timeout=600)
    except subprocess.TimeoutExpired:
        _script("stop", slurm_dir, timeout=120)
        raise
    if started.returncode == CANNOT_START:
        shutil.rmtree(slurm_dir, ignore_errors=True)
        pytest.skip(started.stderr.strip().splitlines()[-1])
    if started.returncode != 0:
        _script("stop", slurm_dir, timeout=120)
        pytest.fail(f"slurm/testcluster.sh start failed ({started.returncode}):\n{started.stderr[-3000:]}")
    saved = {k: os.environ.get(k) for k in ("SLURM_CONF", "PATH")}
    os.environ["SLURM_CONF"] = str(slurm_dir / "slurm.conf")
    os.environ["PATH"] = f"{slurm_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"  # the sacct stand-in
    try:
        yield slurm_dir
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _script("stop", slurm_dir, timeout=120)
        shutil.rmtree(slurm_dir, ignore_errors=True)
