"""Tidy results in and out: MetricRow list ↔ DataFrame ↔ parquet, and merging several run directories."""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd

from ..errors import HarnessError
from ..store import atomic_write_bytes
from ..types import MetricRow

COLUMNS = [f.name for f in fields(MetricRow)]


def rows_to_frame(rows: list[MetricRow]) -> pd.DataFrame:
    frame = pd.DataFrame([asdict(r) for r in rows], columns=COLUMNS)
    return frame.astype({"cfg": "float64", "ci_low": "float64", "ci_high": "float64"})


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def read_results(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / "results.parquet"
    if not path.exists():
        raise HarnessError(f"{path}: no results yet; run `harness run PROTOCOL --results {run_dir}` first")
    frame = pd.read_parquet(path)
    absent = [c for c in COLUMNS if c not in frame.columns]
    if absent:
        raise HarnessError(f"{path}: not a results table of this harness (missing columns {absent})")
    return frame


@dataclass
class Results:
    """The rows to report on, and where each cell's files (images, bootstrap replicates) live."""

    frame: pd.DataFrame
    run_dir_of: dict[str, Path]  # cell_id → the run directory holding bootstrap/<cell_id>/
    cell_dir_of: dict[str, Path]  # cell_id → the cell directory holding images/<index>.png
    description: str = ""
    sources: tuple[Path, ...] = ()


def _cell_dirs(run_dir: Path) -> dict[str, Path]:
    record = run_dir / "run.json"
    if not record.exists():
        return {}
    return {c["cell_id"]: run_dir / c["dir"] for c in json.loads(record.read_text()).get("cells", [])}


def _description(run_dir: Path) -> str:
    record = run_dir / "run.json"
    return json.loads(record.read_text())["protocol"].get("description", "") if record.exists() else ""


def results_from_frame(run_dir: Path, frame: pd.DataFrame) -> Results:
    run_dir = Path(run_dir)
    cell_dirs = _cell_dirs(run_dir)
    cells = set(frame.cell_id)
    return Results(frame, {c: run_dir for c in cells},
                   {c: cell_dirs.get(c, run_dir / "cells" / c) for c in cells}, _description(run_dir), (run_dir,))


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
