"""Synthetic result rows for the report and composite tests (the real MetricRow schema, made-up values)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from harness.reports import rows_to_frame
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


def sweep_cells() -> dict[str, dict]:
    """Two models over steps × cfg, with fid / is / class_alignment values that trade off."""
    cells = {}
    for model, steps_list, base in (("onestep", [1], 30.0), ("multi", [1, 4, 16], 60.0)):
        for steps in steps_list:
            for cfg in (1.0, 3.0):
                fid = base / steps ** 0.5 + (4.0 if cfg == 3.0 else 0.0)
                cells[f"{model}-{steps}-{cfg:g}"] = {
                    "model": model, "steps": steps, "cfg": cfg, "nfe": steps * (2 if cfg != 1.0 else 1),
                    "sec": 0.01 * steps, "fid": fid, "is": 20.0 + 3 * cfg + steps,
                    "class_alignment": 0.5 + 0.1 * cfg}
    return cells


def make_run(run_dir: Path, cells: dict[str, dict], replicates: int = 0, images: int = 0, seed: int = 0,
             run: str = "r") -> Path:
    """A run directory as the runner leaves it: results.parquet, run.json, optional images and replicates."""
    from PIL import Image

    from harness.reports import write_parquet

    rng = np.random.default_rng(seed)
    frame = frame_of(cells, run=run)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(frame, run_dir / "results.parquet")
    record = {"protocol": {"description": f"synthetic {run}"}, "shard_size": 4,
              "cells": [{"cell_id": c, "dir": f"cells/{c}", "model": s["model"], "dataset": "ds",
                         "steps": s["steps"], "cfg": s["cfg"], "n": 100} for c, s in cells.items()]}
    (run_dir / "run.json").write_text(json.dumps(record))
    for cell, spec in cells.items():
        for metric in ("fid", "is"):
            if replicates and metric in spec:
                write_replicates(run_dir, cell, metric, spec[metric] + rng.normal(0, 0.3, replicates))
        for i in range(images):
            path = run_dir / "cells" / cell / "images" / f"{i:07d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
    return run_dir
