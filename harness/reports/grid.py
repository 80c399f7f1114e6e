"""Same-seed image grid: a row per (model, steps, cfg) cell, a column per sample index. Sample i has the
same seed in every cell of a dataset, so a column compares settings on identical noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..store import image_name
from .board import Board
from .plots import pyplot, save_figure
from .tables import fmt_cfg

MAX_ROWS = 24
MAX_COLUMNS = 8


def grid_cells(board: Board, cell_dir_of: dict[str, Path], columns: int = MAX_COLUMNS) -> tuple[pd.DataFrame, list]:
    """The cells with images on disk (model, steps, cfg order) and the first ``columns`` sample indices that
    every one of them has; a partially copied run shows fewer columns, never a blank tile."""
    t = board.table.assign(_cfg=board.table.cfg.fillna(-1.0)).sort_values(["model", "steps", "_cfg"])
    missing = Path("/nonexistent")
    t = t[[(cell_dir_of.get(c, missing) / image_name(0)).is_file() for c in t.cell_id]].head(MAX_ROWS)
    if t.empty:
        return t, []
    indices = [i for i in range(min(columns, int(t.n.min())))
               if all((cell_dir_of[c] / image_name(i)).is_file() for c in t.cell_id)]
    return t, indices


def plot_image_grid(board: Board, cell_dir_of: dict[str, Path], out: Path) -> list[Path]:
    """[] when no cell of the board has its images on disk (e.g. a results table copied without cells/)."""
    cells, indices = grid_cells(board, cell_dir_of)
    if cells.empty or not indices:
        return []
    plt = pyplot()
    rows, cols = len(cells), len(indices)
    fig, axes = plt.subplots(rows, cols, figsize=(0.9 * cols + 1.8, 0.9 * rows + 0.5), squeeze=False)
    for r, (_, cell) in enumerate(cells.iterrows()):
        for c, index in enumerate(indices):
            ax = axes[r][c]
            with Image.open(cell_dir_of[cell.cell_id] / image_name(index)) as im:
                ax.imshow(np.asarray(im.convert("RGB")), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"#{index}", fontsize=7)
        axes[r][0].set_ylabel(f"{cell.model}\n{cell.steps} st, cfg {fmt_cfg(cell.cfg)}", fontsize=6,
                              rotation=0, ha="right", va="center")
    fig.suptitle(f"same seeds across settings — {board.dataset} (column = sample index = seed)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out / f"grid_{board.dataset}")
