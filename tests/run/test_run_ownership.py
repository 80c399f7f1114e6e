"""A results directory belongs to the plan that made it: another protocol is refused before any compute (or
extended on purpose with --extend, keeping what was there); the same protocol resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.cli import main

REPO = Path(__file__).resolve().parents[2]
BASE = ["--set", "metrics=[class_alignment]", "--set", "steps=[1]", "--set", "n=4", "--executor", "debug"]
ONE_CFG = ["--set", "cfg=[1.0]"]
OTHER_CFG = ["--set", "cfg=[2.0]"]


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file of the run directory that a user produced (what must never be overwritten silently)."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def first_run(run: Path, capsys) -> dict[str, bytes]:
    assert main(["run", "smoke", *BASE, *ONE_CFG, "--results", str(run)]) == 0
    capsys.readouterr()
    return snapshot(run)


def test_another_protocol_is_refused_before_anything_is_written(tmp_path, capsys):
    run = tmp_path / "run"
    before = first_run(run, capsys)
    assert main(["run", "smoke", *BASE, *OTHER_CFG, "--results", str(run)]) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {run}: holds a run of protocol 'smoke'"), out.err
    assert "cfg: [1.0] -> [2.0]" in lines[0] and "--results" in lines[0] and "--extend" in lines[0]
    assert "generate" not in out.out  # refused before any compute
    assert snapshot(run) == before  # run.json, results.parquet, leaderboards, images: untouched


def test_results_without_a_run_record_are_not_overwritten(tmp_path, capsys):
    run = tmp_path / "report"
    run.mkdir()
    (run / "leaderboard.md").write_text("a merged report someone wrote here\n")
    assert main(["run", "smoke", *BASE, *ONE_CFG, "--results", str(run)]) == 2
    err = capsys.readouterr().err
    assert "leaderboard.md but no run.json" in err and "--extend" in err
    assert [p.name for p in run.iterdir()] == ["leaderboard.md"]


def test_the_same_protocol_resumes_by_name_or_by_path(tmp_path, capsys):
    run = tmp_path / "run"
    before = first_run(run, capsys)
    assert main(["run", str(REPO / "protocols" / "smoke.yaml"), *BASE, *ONE_CFG, "--results", str(run)]) == 0
    out = capsys.readouterr().out
    assert "generate: nothing to do" in out and "0 metric values computed" in out
    assert (run / "results.parquet").read_bytes() == before["results.parquet"]


def test_extend_adds_cells_and_keeps_the_earlier_cells_and_rows(tmp_path, capsys):
    run = tmp_path / "run"
    first_run(run, capsys)
    earlier = pd.read_parquet(run / "results.parquet")
    assert main(["run", "smoke", *BASE, *OTHER_CFG, "--set", "shard_size=2", "--results", str(run),
                 "--extend"]) == 0
    capsys.readouterr()
    rows = pd.read_parquet(run / "results.parquet")
    assert sorted(rows.cfg) == [1.0, 2.0]  # the earlier cell's row is kept beside the new one
    kept = rows[rows.cell_id.isin(earlier.cell_id)].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, earlier)
    record = json.loads((run / "run.json").read_text())
    assert record["protocol"]["cfg"] == [2.0] and record["extended_from"][0]["cfg"] == [1.0]
    new_cell = rows.cell_id[rows.cfg == 2.0].iloc[0]
    assert {c["cell_id"]: c["shard_size"] for c in record["cells"]} == {earlier.cell_id[0]: 4, new_cell: 2}
    assert main(["status", str(run)]) == 0  # each cell's shards are found with its own shard size
    assert "3/3 shards complete" in capsys.readouterr().out
    # the extended directory now belongs to the new protocol: re-running it resumes and keeps both
    assert main(["run", "smoke", *BASE, *OTHER_CFG, "--set", "shard_size=2", "--results", str(run)]) == 0
    assert "generate: nothing to do" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_parquet(run / "results.parquet").drop(columns="created_at"),
                                  rows.drop(columns="created_at"))
