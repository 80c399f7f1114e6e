"""Tidy results in and out: MetricRow list ↔ DataFrame ↔ parquet, and merging several run directories."""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.store import atomic_write_bytes
from harness.types import MetricRow

COLUMNS = [f.name for f in fields(MetricRow)]


def rows_to_frame(rows: list[MetricRow]) -> pd.DataFrame:
    frame = pd.DataFrame([asdict(r) for r in rows], columns=COLUMNS)
    return frame.astype({"cfg": "float64", "ci_low": "float64", "ci_high": "float64"})


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


NUMERIC_COLUMNS = ("steps", "cfg", "n", "value", "ci_low", "ci_high", "nfe_mean")


def read_results(run_dir: Path, name: str = "results.parquet") -> pd.DataFrame:
    """The tidy table ``run_dir/name``; a missing, unreadable or foreign one (columns absent, or a number
    column holding text) is refused naming the file."""
    path = Path(run_dir) / name
    if not path.exists():
        raise HarnessError(f"{path}: no results yet; run `harness run PROTOCOL --results {run_dir}` first")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError: truncated or not parquet
        raise HarnessError(f"{path}: cannot read the results table ({str(e).splitlines()[0]}); the file is damaged: "
                           f"run `harness run` again on {run_dir} to rewrite it") from None
    absent = [c for c in COLUMNS if c not in frame.columns]
    if absent:
        raise HarnessError(f"{path}: not a results table of this harness (missing columns {absent})")
    wrong = [f"{c} ({frame[c].dtype})" for c in NUMERIC_COLUMNS if not pd.api.types.is_numeric_dtype(frame[c])]
    if wrong:
        raise HarnessError(f"{path}: not a results table of this harness (columns {', '.join(wrong)} must hold "
                           f"numbers)")
    return frame


@dataclass
class Results:
    """The rows to report on, and where each cell's files (images, bootstrap replicates) live."""

    frame: pd.DataFrame
    run_dir_of: dict[str, Path]  # cell_id → the run directory holding bootstrap/<cell_id>/
    cell_dir_of: dict[str, Path]  # cell_id → the cell directory holding images/<index>.png
    description: str = ""
    sources: tuple[Path, ...] = ()


def _run_record(run_dir: Path) -> dict:
    """run.json ({} when absent: a results table copied on its own); a damaged one is refused by path."""
    path = run_dir / "run.json"
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
        cells = {c["cell_id"]: run_dir / c["dir"] for c in record.get("cells", [])}
        return {"cells": cells, "description": record.get("protocol", {}).get("description", "")}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise HarnessError(f"{path}: run record is damaged ({type(e).__name__}: {e}); restore it or run "
                           f"`harness run` again on {run_dir}") from None


def results_from_frame(run_dir: Path, frame: pd.DataFrame) -> Results:
    run_dir = Path(run_dir)
    record = _run_record(run_dir)
    cell_dirs = record.get("cells", {})
    cells = set(frame.cell_id)
    return Results(frame, {c: run_dir for c in cells},
                   {c: cell_dirs.get(c, run_dir / "cells" / c) for c in cells}, record.get("description", ""),
                   (run_dir,))


def load_runs(run_dirs: list[Path]) -> Results:
    """Merge the results of several runs. A cell (same content hash) present in two runs is kept once;
    if its values differ between them the merge is refused (naming both runs), never averaged."""
    if not run_dirs:
        raise HarnessError("no run directory given")
    parts = [results_from_frame(d, read_results(d)) for d in run_dirs]
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    key = ["cell_id", "metric", "variant"]
    clash = frame.groupby(key).value.nunique()
    clash = clash[clash > 1]
    if not clash.empty:
        cell, metric, variant = clash.index[0]
        runs = sorted(set(frame[(frame.cell_id == cell) & (frame.metric == metric)].run))
        raise HarnessError(f"cell {cell} metric {metric} ({variant}) has different values in runs {runs}; "
                           "the same cell should give the same number — re-score one of them")
    seen = frame.drop_duplicates(key, keep="first")
    run_dir_of, cell_dir_of = {}, {}
    for p in reversed(parts):  # the first run listed wins, as in drop_duplicates above
        run_dir_of.update(p.run_dir_of)
        cell_dir_of.update(p.cell_dir_of)
    description = "; ".join(dict.fromkeys(p.description for p in parts if p.description))
    return Results(seen.reset_index(drop=True), run_dir_of, cell_dir_of, description, tuple(map(Path, run_dirs)))


def seed_of(seed_policy: str) -> str:
    """The protocol seed in a row's seed policy ("sha256(seed=3,dataset,index)" → "3"); the policy otherwise."""
    head, found, rest = str(seed_policy).partition("seed=")
    return rest.split(",")[0].split(")")[0] if found else str(seed_policy)


def provenance_columns(table: pd.DataFrame) -> dict[str, list[str]]:
    """``run`` and ``seed`` for a leaderboard whose rows come from several runs or repeat a (model, steps, cfg)
    setting (merged runs with other seeds or n): without them such rows cannot be told apart. {} otherwise."""
    repeated = table.assign(_cfg=table.cfg.fillna(-1.0)).duplicated(["model", "steps", "_cfg"]).any()
    if not repeated and table.run.nunique() <= 1:
        return {}
    return {"run": [str(r) for r in table.run], "seed": [seed_of(p) for p in table.seed_policy]}
