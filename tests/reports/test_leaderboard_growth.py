"""Adding a model to a leaderboard computes only that model's cells: the others are found by content."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.cli import main

BASE = ["--set", "metrics=[class_alignment]", "--set", "steps=[1]", "--set", "n=4", "--executor", "debug"]


def test_adding_a_model_generates_and_scores_only_its_cells(tmp_path: Path, capsys) -> None:
    run = tmp_path / "board"
    assert main(["run", "smoke", *BASE, "--set", "models=[{card: fm-tiny, cfg: [1.0, 2.0]}]",
                 "--results", str(run)]) == 0
    first = capsys.readouterr().out
    assert "8 samples generated, 0 reused" in first
    pngs = {p: p.stat().st_mtime_ns for p in run.glob("cells/*/images/*.png")}
    assert len(pngs) == 8
    both = "models=[{card: fm-tiny, cfg: [1.0, 2.0]}, {card: fm-tiny-noguide, cfg: [null]}]"
    # another protocol in the same directory: refused unless extended on purpose
    assert main(["run", "smoke", *BASE, "--set", both, "--results", str(run)]) == 2
    assert "--extend" in capsys.readouterr().err
    assert main(["run", "smoke", *BASE, "--set", both, "--results", str(run), "--extend"]) == 0
    second = capsys.readouterr().out
    assert "generate: 1 of 3 shards to do" in second and "4 samples generated" in second  # only the new cell
    assert "1 metric values computed, 2 read from cache" in second  # and only it was scored
    assert {p: p.stat().st_mtime_ns for p in pngs} == pngs  # the first model's images were not rewritten
    board = pd.read_parquet(run / "results.parquet")
    assert sorted(board.model.unique()) == ["fm-tiny", "fm-tiny-noguide"]
    assert len(board[board.metric == "class_alignment"]) == 3
