"""What two views of the same thing must agree on (issue 14 item 8): ``weights list`` vs ``weights verify``, the
image grid vs the models in the table, merged leaderboards vs the runs their rows came from."""

from __future__ import annotations

import pandas as pd

from harness.cli import main
from harness.cli.weights import status_lines
from harness.features.weights import ENTRIES, locate
from harness.reports import load_runs, write_results_report
from harness.reports.grid import MAX_ROWS, grid_cells
from tests.support.report_rows import make_run


def test_every_weights_name_listed_as_found_is_accepted_by_verify_and_fetch(capsys):
    from harness.features.weights import packaged_names

    assert "mnist-cnn" in packaged_names()
    listed = [line.split()[0] for line in status_lines() if not line.startswith(" ")]
    found = [name for name, line in zip(listed, (ln for ln in status_lines() if not ln.startswith(" ")), strict=True)
             if "MISSING" not in line]
    assert "mnist-cnn" in found and "inception-fid-helper" in found
    for name in found:
        assert main(["weights", "verify", name]) == 0, capsys.readouterr().err
        assert ": ok (" in capsys.readouterr().out
    assert main(["weights", "fetch", "mnist-cnn"]) == 0  # packaged: nothing to download, and it says so
    assert "packaged in digit-recognizer-py" in capsys.readouterr().out
    assert main(["weights", "verify"]) == 0  # no names: everything list shows as present, packaged included
    out = capsys.readouterr().out
    assert "handwriting_model.pth: ok" in out
    assert out.count(": ok (") >= len(packaged_names()) + sum(locate(n) is not None for n in ENTRIES)


def _many_cells() -> dict[str, dict]:
    """Three models, 40 settings in all: the big one alone needs two pages of MAX_ROWS rows."""
    cells = {}
    for model, steps_list in (("big", range(1, 31)), ("mid", range(1, 9)), ("small", (1, 2))):
        for steps in steps_list:
            cells[f"{model}-{steps}"] = {"model": model, "steps": steps, "cfg": 1.0, "fid": 10.0 + steps, "is": 5.0}
    return cells


def test_the_image_grid_shows_every_model_on_pages_of_at_most_max_rows(tmp_path):
    from harness.reports.grid import pages

    run = make_run(tmp_path / "run", _many_cells(), images=2)
    results = load_runs([run])
    written = write_results_report(results, run)
    from harness.reports.board import build_boards

    board = build_boards(results)[0]
    cells, indices, left_out = grid_cells(board, results.cell_dir_of)
    book = pages(cells)
    assert indices == [0, 1] and left_out == []
    assert all(len(p) <= MAX_ROWS for p in book)
    assert sorted(pd.concat(book).cell_id) == sorted(_many_cells())  # every cell, once
    assert [sorted(set(p.model)) for p in book] == [["big"], ["big", "mid", "small"]]
    names = sorted(p.name for p in written if p.name.startswith("grid_") and p.suffix == ".png")
    assert names == ["grid_ds.png", "grid_ds_p2.png"]
    html = (run / "index.html").read_text()
    assert "plots/grid_ds.png" in html and "plots/grid_ds_p2.png" in html


def test_merged_reports_carry_run_and_seed_so_repeated_settings_are_told_apart(tmp_path):
    setting = {"model": "m", "steps": 4, "cfg": 2.0, "fid": 12.0, "is": 7.0}
    a = make_run(tmp_path / "a", {"cell-seed0": setting}, run="run-a")
    b = make_run(tmp_path / "b", {"cell-seed1": {**setting, "fid": 13.0}}, run="run-b")
    frame = pd.read_parquet(b / "results.parquet")
    frame["seed_policy"] = "sha256(seed=1,dataset,index)"
    frame.to_parquet(b / "results.parquet", index=False)
    out = tmp_path / "merged"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    table = [[c.strip() for c in line.strip("|").split("|")] for line in (out / "leaderboard.md").read_text()
             .splitlines() if line.startswith("|") and not line.startswith("|:")]
    header, body = table[0], [dict(zip(table[0], r, strict=True)) for r in table[1:] if len(r) == len(table[0])]
    assert header[1:5] == ["model", "run", "seed", "steps"]
    board = [r for r in body if "run" in r and r["run"].startswith("run-")]
    assert sorted((r["run"], r["seed"], r["steps"], r["cfg"]) for r in board) == [
        ("run-a", "0", "4", "2"), ("run-b", "1", "4", "2")]
    csv = pd.read_csv(out / "leaderboard.csv")
    assert sorted(zip(csv.run, csv.seed_policy, strict=True)) == [
        ("run-a", "sha256(seed=0,dataset,index)"), ("run-b", "sha256(seed=1,dataset,index)")]
    html = (out / "index.html").read_text()
    assert '>run</th>' in html and '>seed</th>' in html and ">run-b</td>" in html
    # one run, no repeated setting: the columns stay out of the human tables
    assert main(["report", str(a)]) == 0
    assert "| run " not in (a / "leaderboard.md").read_text() and " run " not in (a / "leaderboard.md").read_text()
