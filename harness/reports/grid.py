"""Same-seed image grid: a row per (model, steps, cfg) cell, a column per sample index. Sample i has the
same seed in every cell of a dataset, so a column compares settings on identical noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..store import image_name
from .board import Board
from .plots import pyplot, save_figure, stem_in
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


def mosaic(tiles: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Rows of equal-size uint8 HxWx3 tiles → one white-padded image (one imshow instead of rows×cols axes)."""
    h, w = tiles[0][0].shape[:2]
    out = np.full((len(tiles) * (h + pad) + pad, len(tiles[0]) * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            out[y:y + h, x:x + w] = tile
    return out


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def plot_image_grid(board: Board, cell_dir_of: dict[str, Path], out: Path) -> list[Path]:
    """[] when no cell of the board has its images on disk (e.g. a results table copied without cells/)."""
    cells, indices = grid_cells(board, cell_dir_of)
    if cells.empty or not indices:
        return []
    tiles = [[_load(cell_dir_of[c] / image_name(i)) for i in indices] for c in cells.cell_id]
    if len({t.shape for row in tiles for t in row}) != 1:  # models at different resolutions: common size
        size = max(t.shape[0] for row in tiles for t in row)
        tiles = [[np.asarray(Image.fromarray(t).resize((size, size), Image.NEAREST)) for t in row] for row in tiles]
    pad, (h, w) = 2, tiles[0][0].shape[:2]
    plt = pyplot()
    rows, cols = len(tiles), len(indices)
    fig, ax = plt.subplots(figsize=(0.8 * cols + 1.8, 0.8 * rows + 0.6))
    ax.imshow(mosaic(tiles, pad), interpolation="nearest")
    ax.set_xticks([pad + c * (w + pad) + w / 2 for c in range(cols)], [f"#{i}" for i in indices], fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks([pad + r * (h + pad) + h / 2 for r in range(rows)],
                  [f"{c.model}\n{c.steps} st, cfg {fmt_cfg(c.cfg)}" for _, c in cells.iterrows()], fontsize=6)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(f"same seeds across settings — {board.dataset} (column = sample index = seed)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, stem_in(out, f"grid_{board.dataset}"))
