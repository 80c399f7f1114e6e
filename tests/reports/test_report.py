"""Reports from synthetic run directories: every view written, numbers traced back to the rows, merges,
comparisons and the LaTeX (compiled when a TeX engine is present)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.reports import (
    build_boards,
    compare_runs,
    load_runs,
    results_from_frame,
    selection_changes,
    write_comparison,
    write_results_report,
)
from harness.reports.mmhm import load_bounds, mmhm
from harness.reports.plots import pareto_front
from tests.support.report_rows import frame_of, make_run, sweep_cells, write_replicates


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("run") / "run", sweep_cells(), replicates=200, images=3)
    return run, write_results_report(load_runs([run]), run)


def test_every_view_is_written_in_png_and_pdf(reported):
    run, written = reported
    names = {p.relative_to(run).as_posix() for p in written}
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.tex", "index.html", "mmhm_bounds_ds.json"):
        assert name in names
    for stem in ("fid_vs_steps_ds", "is_vs_guidance_ds", "fid_vs_nfe_ds", "fid_vs_sec_ds", "correlation_ds",
                 "mmhm_heatmap_ds", "grid_ds"):
        assert (run / "plots" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", stem
        assert (run / "plots" / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-", stem


def test_csv_numbers_trace_back_to_the_rows_and_to_mmhm(reported):
    run, _ = reported
    csv = pd.read_csv(run / "leaderboard.csv").set_index("cell_id")
    rows = pd.read_parquet(run / "results.parquet")
    for _, r in rows.iterrows():
        assert csv.loc[r.cell_id, r.metric] == r.value
    scores = mmhm(rows)  # default: the paper's metrics present = fid, is
    assert scores.metrics == ("fid", "is")
    np.testing.assert_allclose(csv.loc[scores.table.index, "mmhm"], scores.table.mmhm, rtol=1e-12)
    assert (csv.mmhm_ci_low <= csv.mmhm + 1e-12).all() and (csv.mmhm <= csv.mmhm_ci_high + 1e-12).all()
    # rank 1 is the best MMHM; each noise flag says exactly whether its CI overlaps the next rank's
    ordered = csv.sort_values("rank")
    assert ordered.mmhm.is_monotonic_decreasing and ordered["rank"].iloc[0] == 1
    for (_, a), (_, b) in zip(ordered.iloc[:-1].iterrows(), ordered.iloc[1:].iterrows(), strict=True):
        assert a.noise == (a.mmhm_ci_low <= b.mmhm_ci_high and b.mmhm_ci_low <= a.mmhm_ci_high)
    assert ordered.noise.any() and not ordered.noise.all()  # the fixture has both kinds of neighbours


def test_markdown_shows_selection_beside_the_fid_optimum(reported):
    run, _ = reported
    board = (run / "leaderboard.md").read_text()
    csv = pd.read_csv(run / "leaderboard.csv")
    for model, part in csv.groupby("model"):
        best = part.loc[part.mmhm.idxmax()]
        assert "MMHM" in best.selected_as.split(", "), model
        fid_best = part.loc[part.fid.idxmin()]
        assert "fid-optimal" in fid_best.selected_as, model
    assert "### Selection per model" in board and "| multi   | fid-optimal |" in board
    assert "MMHM over fid, is (ε = 1e-3; bounds from the 8 cells of this table" in board
    assert "≈" in board


def test_latex_is_booktabs_with_the_best_per_column_in_bold(reported):
    run, _ = reported
    tex = (run / "leaderboard.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"class\_alignment" in tex and "class_alignment" not in tex.replace(r"class\_alignment", "")
    best_fid = min(v["fid"] for v in sweep_cells().values())
    assert f"$\\mathbf{{{best_fid:.4g}}}$" in tex  # fid has no row CI: no ± part
    assert tex.count(r"\mathbf") >= 4  # fid, is, class_alignment, MMHM
    assert r"\pm" not in tex and re.search(r"\$[0-9.]+ \[[0-9.]+, [0-9.]+\]\$", tex)  # MMHM: value [CI]


def test_latex_compiles_when_a_tex_engine_is_present(reported, tmp_path):
    engine = shutil.which("pdflatex")
    if engine is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-recommended); LaTeX not compiled")
    run, _ = reported
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[utf8]{inputenc}\n"
                   "\\begin{document}\n" + (run / "leaderboard.tex").read_text() + "\n\\end{document}\n")
    done = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "doc.pdf").read_bytes()[:5] == b"%PDF-"


def test_pareto_front_by_hand():
    cost = [1, 2, 2, 4, 8]
    fid = [50.0, 30.0, 35.0, 30.0, 10.0]  # (2,35) loses to (2,30); (4,30) ties quality at a higher cost
    assert list(pareto_front(cost, fid, higher_is_better=False)) == [True, True, False, False, True]
    assert list(pareto_front(cost, [-v for v in fid], higher_is_better=True)) == [True, True, False, False, True]


def test_frozen_bounds_from_one_run_are_reused_on_another(reported, tmp_path):
    run, _ = reported
    bounds = load_bounds(run / "mmhm_bounds_ds.json")
    shifted = {c: {**s, "fid": s["fid"] + 100.0} for c, s in sweep_cells().items()}
    other = make_run(tmp_path / "other", shifted)
    board = build_boards(load_runs([other]), bounds=bounds)[0]
    assert (board.scores.table.u_fid == 0.0).all()  # every FID beyond the frozen max: u clipped to 0
    assert any("reused bounds" in n and "clipped" in n for n in board.notes)


def test_merging_runs_keeps_shared_cells_once_and_refuses_conflicts(tmp_path):
    cells = sweep_cells()
    multi = {c: s for c, s in cells.items() if s["model"] == "multi"}
    a = make_run(tmp_path / "a", {c: s for c, s in cells.items() if s["model"] == "onestep"} | {
        "multi-1-1": cells["multi-1-1"]}, run="a")
    b = make_run(tmp_path / "b", multi, run="b")
    merged = load_runs([a, b])
    assert len(merged.frame) == 3 * len(cells) and set(merged.frame.model) == {"onestep", "multi"}
    assert merged.run_dir_of["multi-1-1"] == a and merged.run_dir_of["multi-4-1"] == b
    bad = make_run(tmp_path / "bad", {"multi-1-1": {**cells["multi-1-1"], "fid": 1.0}}, run="bad")
    with pytest.raises(HarnessError, match=r"cell multi-1-1 metric fid \(v1\) has different values in runs"):
        load_runs([a, bad])


def test_cli_merges_runs_into_out_and_requires_out(tmp_path, capsys):
    cells = sweep_cells()
    a = make_run(tmp_path / "a", {c: s for c, s in cells.items() if s["model"] == "onestep"}, run="a")
    b = make_run(tmp_path / "b", {c: s for c, s in cells.items() if s["model"] == "multi"}, run="b")
    assert main(["report", str(a), str(b)]) == 2
    assert "merging 2 runs needs --out DIR" in capsys.readouterr().err
    out = tmp_path / "merged"
    assert main(["report", str(a), str(b), "--out", str(out), "--mmhm-metrics", "fid,class_alignment"]) == 0
    board = (out / "leaderboard.md").read_text()
    assert "MMHM over fid, class_alignment" in board and "| onestep |" in board and "| multi   |" in board
    assert "synthetic a; synthetic b" in board
    assert main(["report", str(a), "--mmhm-metrics", "fid,pickscore"]) == 2
    assert "['pickscore'] are not in the results" in capsys.readouterr().err


def test_compare_uses_replicates_and_flags_changes_inside_the_noise(tmp_path):
    cells = sweep_cells()
    base = make_run(tmp_path / "base", cells, run="base")
    moved = {c: {**s, "fid": s["fid"] + (5.0 if c == "multi-4-1" else 0.01)} for c, s in cells.items()}
    new = make_run(tmp_path / "new", moved, run="new")
    rng = np.random.default_rng(1)
    for c in cells:  # replicates: sd 0.5, so +0.01 is noise and +5 is not
        write_replicates(base, c, "fid", cells[c]["fid"] + rng.normal(0, 0.5, 300))
        write_replicates(new, c, "fid", moved[c]["fid"] + rng.normal(0, 0.5, 300))
    diff = compare_runs(load_runs([new]), load_runs([base])).set_index(["model", "steps", "cfg", "metric"])
    assert diff.loc[("multi", 4, 1.0, "fid"), "verdict"] == "worse"  # FID up is worse
    assert diff.loc[("multi", 4, 1.0, "fid"), "delta"] == pytest.approx(5.0)
    assert diff.loc[("multi", 1, 3.0, "fid"), "verdict"] == "inside the noise"
    assert (diff.xs("fid", level="metric").ci_from == "bootstrap").all()
    assert (diff.xs("is", level="metric").verdict == "identical").all()


def test_compare_without_replicates_combines_row_cis_and_lists_unmatched_settings(tmp_path):
    def run_with(value: float, ci: tuple[float, float], extra: bool):
        frame = frame_of({"c1": {"class_alignment": value}} | ({"c2": {"steps": 2, "fid": 3.0}} if extra else {}))
        frame.loc[frame.metric == "class_alignment", ["ci_low", "ci_high"]] = ci
        return results_from_frame(tmp_path, frame)

    diff = compare_runs(run_with(0.60, (0.50, 0.70), True), run_with(0.30, (0.20, 0.40), False))
    row = diff[diff.metric == "class_alignment"].iloc[0]
    half = 1.959963984540054 * np.hypot(0.1 / 1.959963984540054, 0.1 / 1.959963984540054)
    assert row.ci_from == "row CIs" and row.ci_low == pytest.approx(0.3 - half) and row.verdict == "better"
    assert diff[diff.metric == "fid"].verdict.item() == "only in this run"


def test_non_finite_values_are_refused_before_anything_is_written(tmp_path):
    frame = frame_of({"c1": {"fid": float("nan")}})
    with pytest.raises(HarnessError, match="cell c1 metric fid is nan"):
        write_results_report(results_from_frame(tmp_path, frame), tmp_path)
    assert not (tmp_path / "leaderboard.md").exists()


def test_a_frame_without_metric_rows_still_writes_a_page(tmp_path):
    empty = frame_of({})
    written = write_results_report(results_from_frame(tmp_path, empty), tmp_path)
    assert "No metric rows" in (tmp_path / "leaderboard.md").read_text()
    assert tmp_path / "index.html" in written and io.StringIO((tmp_path / "leaderboard.csv").read_text())


def test_grid_mosaic_places_each_tile_at_its_row_and_column():
    from harness.reports.grid import mosaic

    tiles = [[np.full((4, 5, 3), 10 * (3 * r + c), dtype=np.uint8) for c in range(3)] for r in range(2)]
    image = mosaic(tiles, pad=2)
    assert image.shape == (2 * 6 + 2, 3 * 7 + 2, 3)
    for r in range(2):
        for c in range(3):
            y, x = 2 + r * 6, 2 + c * 7
            assert (image[y:y + 4, x:x + 5] == 10 * (3 * r + c)).all()
    assert (image[:2] == 255).all() and (image[:, :2] == 255).all()  # padding stays white


def test_dataset_ids_with_slashes_make_safe_file_names(tmp_path):
    frame = frame_of({"a": {"fid": 3.0, "is": 2.0}, "b": {"steps": 2, "fid": 4.0, "is": 5.0},
                      "c": {"steps": 4, "fid": 5.0, "is": 4.0}}, dataset="org/set v2")
    written = write_results_report(results_from_frame(tmp_path, frame), tmp_path)
    assert tmp_path / "mmhm_bounds_org_set_v2.json" in written
    assert (tmp_path / "plots" / "fid_vs_steps_org_set_v2.png").is_file()
    assert all(p.is_relative_to(tmp_path) and p.is_file() for p in written)
    assert "## org/set v2" in (tmp_path / "leaderboard.md").read_text()


def compare_selection(run, other):
    return selection_changes(load_runs([run]), load_runs([other]))


def test_compare_reports_moved_mmhm_choices_and_whether_the_move_is_inside_the_noise(tmp_path):
    cells = sweep_cells()
    base = make_run(tmp_path / "base", cells, replicates=200, run="base")
    # in the new run multi's 16-step cfg-1 setting improves a lot: the MMHM choice moves there, clearly
    moved = {c: ({**s, "fid": s["fid"] - 8.0, "is": s["is"] + 10.0} if c == "multi-16-1" else s)
             for c, s in cells.items()}
    new = make_run(tmp_path / "new", moved, replicates=200, run="new", seed=1)
    changes = compare_selection(new, base).set_index("model")
    assert changes.loc["multi", "chosen_other"] == "16 steps, cfg 3"
    assert changes.loc["multi", "chosen"] == "16 steps, cfg 1" and changes.loc["multi", "verdict"] == "changed"
    assert changes.loc["onestep", "verdict"] == "same setting"
    md, *_ = write_comparison(load_runs([new]), load_runs([base]), tmp_path)
    assert "| ds        | multi   | 16 steps, cfg 1 | 16 steps, cfg 3 |" in md.read_text()
    # replicates so wide that the two settings cannot be told apart: the same move is inside the noise
    for c, s in moved.items():
        for metric in ("fid", "is"):
            write_replicates(new, c, metric, s[metric] + np.random.default_rng(2).normal(0, 30.0, 200))
    assert compare_selection(new, base).set_index("model").loc["multi", "verdict"] == "changed, inside the noise"
