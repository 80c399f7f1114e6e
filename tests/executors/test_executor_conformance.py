"""Executor conformance: every executor runs the same stages (harness/run/stages.py) to the same images and the
same results.parquet as the debug executor. Slurm is held to it on a real cluster in test_slurm_cluster.py;
here: local worker processes, and a plugin executor from one file (tests/support/plugins/dummy_executor.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import tests.support.plugins.dummy_executor  # noqa: F401 - registers "plugin-reverse"
from harness.executors import make_executor
from harness.plan.protocol import load_protocol, make_plan
from harness.run.runner import run_plan

REPO = Path(__file__).resolve().parents[2]
# the reference stage too (fid_mnist: statistics of 300 test digits = 3 chunks, the last one short)
OVERRIDES = ["metrics=[fid_mnist, class_alignment]", "reference_n=300"]


def run_with(name: str, root: Path) -> Path:
    plan = make_plan(load_protocol(REPO / "protocols" / "smoke.yaml", OVERRIDES))
    executor = make_executor(name, 2 if name == "local" else None)
    try:
        run_plan(plan, root / "run", root / "cache", executor)
    finally:
        executor.close()
    return root / "run"


def images(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.glob("cells/*/images/*.png"))}


def values(run: Path) -> pd.DataFrame:
    frame = pd.read_parquet(run / "results.parquet").drop(columns=["created_at", "sec_per_image"])
    return frame.sort_values(["cell_id", "metric"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory) -> Path:
    return run_with("debug", tmp_path_factory.mktemp("debug"))


@pytest.mark.parametrize("name", ["local", "plugin-reverse"])
def test_executor_gives_the_debug_executors_images_and_parquet(name, debug_run, tmp_path, capsys):
    run = run_with(name, tmp_path)
    out = capsys.readouterr().out
    assert "generate: 8 of 8 shards to do" in out and "3 reference chunks of 128 images" in out
    assert images(run) == images(debug_run) and len(images(run)) == 24
    pd.testing.assert_frame_equal(values(run), values(debug_run))
    assert set(values(run).metric) == {"fid_mnist", "class_alignment"}
