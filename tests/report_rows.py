"""Synthetic result rows for the report and composite tests (the real MetricRow schema, made-up values)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.report import rows_to_frame
from harness.types import MetricRow

HIGHER = {"fid": False, "is": True, "clip_score": True, "pickscore": True, "class_alignment": True}


def row(cell: str, metric: str, value: float, model: str = "m", steps: int = 1, cfg: float | None = 1.0,
        dataset: str = "ds", run: str = "r", ci: tuple[float, float] | None = None, nfe: float = 1.0,
        sec: float = 0.01, n: int = 100) -> MetricRow:
    return MetricRow(run=run, cell_id=cell, model=model, family="fam", steps=steps, cfg=cfg, guidance="cfg",
                     dataset=dataset, n=n, seed_policy="sha256(seed=0,dataset,index)", metric=metric,
                     variant="v1", value=float(value), ci_low=None if ci is None else ci[0],
                     ci_high=None if ci is None else ci[1], higher_is_better=HIGHER.get(metric, True),
                     nfe_mean=nfe, sec_per_image=sec, extractor_id="ext", reference_id="",
                     harness_version="0", created_at="2026-01-01T00:00:00+00:00")


def frame_of(cells: dict[str, dict], **common) -> pd.DataFrame:
    """cells: {cell_id: {"model":..., "steps":..., "cfg":..., "fid": v, "is": v, ...}} → tidy frame."""
    settings = ("model", "steps", "cfg", "dataset", "run", "nfe", "sec", "n")
    rows = []
    for cell, spec in cells.items():
        kw = {**common, **{k: v for k, v in spec.items() if k in settings}}
        rows += [row(cell, m, v, **kw) for m, v in spec.items() if m not in settings]
    return rows_to_frame(rows)


def write_replicates(run_dir: Path, cell_id: str, metric: str, values) -> Path:
    path = run_dir / "bootstrap" / cell_id / f"{metric}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(values, dtype=np.float64))
    return path
