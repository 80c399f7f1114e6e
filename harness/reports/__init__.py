"""Reports from the tidy results: leaderboards (md / csv / LaTeX / HTML), plots, image grids, comparisons.

Every view is computed from results.parquet (pandas) by ``write_report``; nothing here runs a model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from harness.reports.board import Board, build_boards
from harness.reports.compare import (
    compare_runs,
    comparison_markdown,
    mmhm_differences,
    mmhm_markdown,
    selection_changes,
)
from harness.reports.grid import plot_image_grid
from harness.reports.html import leaderboard_html
from harness.reports.mmhm import Bounds
from harness.reports.pareto import write_cost_views
from harness.reports.plots import safe_name, write_plots
from harness.reports.results import Results, load_runs, read_results, results_from_frame, rows_to_frame, write_parquet
from harness.reports.seeds import seed_spread, seeds_markdown
from harness.reports.tables import leaderboard_csv, leaderboard_latex, leaderboard_markdown
from harness.store import atomic_write_bytes

__all__ = ["Board", "Results", "build_boards", "compare_runs", "load_runs", "read_results", "results_from_frame",
           "rows_to_frame", "selection_changes", "write_comparison", "write_parquet", "write_report",
           "write_results_report"]


def _write_text(path: Path, text: str) -> Path:
    atomic_write_bytes(path, text.encode())
    return path


def write_results_report(results: Results, out: Path, mmhm_metrics: Sequence[str] | None = None,
                         bounds: Bounds | None = None, mmhm_best: str = "rows") -> list[Path]:
    """leaderboard.{md,csv,tex}, mmhm_bounds_<dataset>.json, plots/*.{png,pdf}, index.html and, for seed
    replicates, seeds.csv (plus a "Seed replicates" section in leaderboard.md) under ``out``
    (``mmhm_best``: "rows", or "real" for the real-data floor as MMHM's best bound, see board.build_board)."""
    out = Path(out)
    boards = build_boards(results, mmhm_metrics, bounds, mmhm_best)
    spread = seed_spread(results.frame)  # seed replicates: the between-seed spread of each setting
    markdown = leaderboard_markdown(boards, results.description)
    written = [_write_text(out / "leaderboard.md", markdown + ("\n" + seeds_markdown(spread) if len(spread) else "")),
               _write_text(out / "leaderboard.csv", leaderboard_csv(boards)),
               _write_text(out / "leaderboard.tex", leaderboard_latex(boards))]
    if len(spread):
        written.append(_write_text(out / "seeds.csv", spread.to_csv(index=False)))
    for b in boards:
        if b.scores is not None and not b.scores.bounds.frozen_from:
            path = out / safe_name(f"mmhm_bounds_{b.dataset}.json")
            b.scores.bounds.save(path)
            written.append(path)
    plots = {b.dataset: write_plots(b, out / "plots") for b in boards}
    grids = {b.dataset: plot_image_grid(b, results.cell_dir_of, out / "plots") for b in boards}
    written += [p for paths in (*plots.values(), *grids.values()) for p in paths]
    cost_plots, cost_tables = write_cost_views(boards, out)  # only when cost rows exist (harness/run/cost_stage.py)
    written += [p for paths in cost_plots.values() for p in paths] + cost_tables
    plots = {d: paths + cost_plots.get(d, []) for d, paths in plots.items()}
    page = leaderboard_html(boards, out, plots, grids, results.description, extra_links=written[:3] + cost_tables)
    written.append(_write_text(out / "index.html", page))
    return written


def write_report(run_dir: Path, frame: pd.DataFrame, mmhm_metrics: Sequence[str] | None = None,
                 bounds: Bounds | None = None) -> list[Path]:
    """The runner's entry point: the report of one run directory, written into it."""
    return write_results_report(results_from_frame(run_dir, frame), run_dir, mmhm_metrics, bounds)


def write_comparison(run: Results, other: Results, out: Path, mmhm_metrics: Sequence[str] | None = None,
                     bounds: Bounds | None = None) -> list[Path]:
    """comparison.md and comparison.csv: paired differences run − other with CIs and noise verdicts, and
    (in the .md) whether each model's MMHM choice moved, and if so whether inside the noise; per-setting
    MMHM Δ with paired-bootstrap CIs in the .md and comparison_mmhm.csv."""
    diff = compare_runs(run, other)
    moves = selection_changes(run, other, mmhm_metrics, bounds)
    mmhm_diff, notes = mmhm_differences(run, other, mmhm_metrics, bounds)
    names = (Path(run.sources[0]).name, Path(other.sources[0]).name)
    if names[0] == names[1]:
        names = (str(run.sources[0]), str(other.sources[0]))
    section = mmhm_markdown(mmhm_diff, notes, *names)
    return [_write_text(Path(out) / "comparison.md", comparison_markdown(diff, *names, moves, section)),
            _write_text(Path(out) / "comparison.csv", diff.to_csv(index=False)),
            _write_text(Path(out) / "comparison_mmhm.csv", mmhm_diff.to_csv(index=False))]
