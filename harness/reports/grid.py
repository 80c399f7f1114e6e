"""Same-seed image grid: a row per (model, steps, cfg) cell, a column per sample index. Sample i has the
same seed in every cell of a dataset, so a column compares settings on identical noise.

Every model with images on disk is shown: rows go on pages of at most ``MAX_ROWS`` (``grid_<dataset>``, then
``grid_<dataset>_p2``, ...), a model's rows staying together unless it alone fills more than a page. A cell
left out (no images on disk, or an unreadable PNG) is named under the figure and on stderr."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from harness.errors import HarnessError
from harness.images import decode_file
from harness.reports.board import Board
from harness.reports.plots import pyplot, save_figure, stem_in
from harness.reports.tables import fmt_cfg
from harness.store import image_name

MAX_ROWS = 24
MAX_COLUMNS = 8
MAX_NOTES = 6  # left-out cells named under a figure; the rest counted


def _label(cell: pd.Series, sep: str = " ") -> str:
    if bool(cell.get("_floor", False)):
        return f"{cell.model}{sep}(real data)"
    return f"{cell.model}{sep}{cell.steps} st, cfg {fmt_cfg(cell.cfg)}"


def grid_cells(board: Board, cell_dir_of: dict[str, Path], columns: int = MAX_COLUMNS
               ) -> tuple[pd.DataFrame, list, list[str]]:
    """The cells with images on disk (model, steps, cfg order), the first ``columns`` sample indices that every
    one of them has (a partially copied run shows fewer columns, never a blank tile), and what was left out."""
    t = board.table.assign(_cfg=board.table.cfg.fillna(-1.0)).sort_values(["model", "steps", "_cfg"])
    if not board.floor.empty:  # the real-data floor on top: same classes per column, for scale
        t = pd.concat([board.floor.assign(_floor=True), t.assign(_floor=False)], ignore_index=True)
    missing = Path("/nonexistent")
    on_disk = [(cell_dir_of.get(c, missing) / image_name(0)).is_file() for c in t.cell_id]
    left_out = [f"{_label(c)}: no images on disk" for (_, c), ok in zip(t.iterrows(), on_disk, strict=True) if not ok]
    t = t[on_disk]
    if t.empty:
        return t, [], []
    indices = [i for i in range(min(columns, int(t.n.min())))
               if all((cell_dir_of[c] / image_name(i)).is_file() for c in t.cell_id)]
    return t, indices, left_out


def pages(cells: pd.DataFrame, max_rows: int = MAX_ROWS) -> list[pd.DataFrame]:
    """Rows packed into pages of at most ``max_rows``, whole models together when they fit on one page."""
    order = cells.groupby("model", sort=False).ngroup()  # models in the given order (the floor first)
    pieces = [part.iloc[i:i + max_rows] for _, part in cells.groupby(order, sort=True)
              for i in range(0, len(part), max_rows)]
    out: list[list[pd.DataFrame]] = []
    for piece in pieces:
        if out and sum(map(len, out[-1])) + len(piece) <= max_rows:
            out[-1].append(piece)
        else:
            out.append([piece])
    return [pd.concat(page) for page in out]


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
    return decode_file(path)[0]  # the one decoder every path uses (harness/images.py)


def _load_rows(cells: pd.DataFrame, cell_dir_of: dict[str, Path], indices: list
               ) -> tuple[dict[str, list[np.ndarray]], list[str]]:
    """Tiles per cell; a cell with an unreadable PNG is left out (named, with the file and the reason)."""
    rows, left_out = {}, []
    for _, cell in cells.iterrows():
        paths = [cell_dir_of[cell.cell_id] / image_name(i) for i in indices]
        try:
            rows[cell.cell_id] = []
            for path in paths:
                rows[cell.cell_id].append(_load(path))
        except HarnessError as e:  # truncated or corrupt PNG, or a mode the decoder refuses
            del rows[cell.cell_id]
            left_out.append(f"{_label(cell)}: unreadable image {path} ({str(e).splitlines()[0]})")
            print(f"warning: {path}: unreadable PNG ({str(e).splitlines()[0]}); cell {cell.cell_id} left out of "
                  "the image grid (`harness run` on the run directory regenerates a corrupt shard)", file=sys.stderr)
    return rows, left_out


def _common_size(tiles: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    if len({t.shape for row in tiles for t in row}) == 1:
        return tiles
    size = max(t.shape[0] for row in tiles for t in row)  # models at different resolutions: one size
    return [[np.asarray(Image.fromarray(t).resize((size, size), Image.NEAREST)) for t in row] for row in tiles]


def _plot_page(page: pd.DataFrame, tiles: list[list[np.ndarray]], indices: list, title: str,
               notes: list[str], stem: Path) -> list[Path]:
    tiles = _common_size(tiles)
    pad, (h, w) = 2, tiles[0][0].shape[:2]
    plt = pyplot()
    rows, cols = len(tiles), len(indices)
    footer = notes[:MAX_NOTES] + ([f"... and {len(notes) - MAX_NOTES} more"] if len(notes) > MAX_NOTES else [])
    footer_in = 0.12 * (len(footer) + 1) if footer else 0.0  # inches of text under the mosaic
    height = 0.8 * rows + 0.6 + footer_in
    fig, ax = plt.subplots(figsize=(max(0.8 * cols + 1.8, 6.0 if footer else 0.0), height))
    ax.imshow(mosaic(tiles, pad), interpolation="nearest")
    ax.set_xticks([pad + c * (w + pad) + w / 2 for c in range(cols)], [f"#{i}" for i in indices], fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks([pad + r * (h + pad) + h / 2 for r in range(rows)],
                  [_label(c, "\n") for _, c in page.iterrows()], fontsize=6)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=8)
    if footer:
        fig.text(0.01, 0.005, "left out: " + "\n".join(footer), fontsize=5, va="bottom", ha="left")
    fig.tight_layout(rect=(0, footer_in / height, 1, 1))
    return save_figure(fig, stem)


def plot_image_grid(board: Board, cell_dir_of: dict[str, Path], out: Path) -> list[Path]:
    """One or more pages (see the module doc); [] when no cell of the board has its images on disk (e.g. a
    results table copied without cells/)."""
    cells, indices, left_out = grid_cells(board, cell_dir_of)
    if cells.empty or not indices:
        return []
    tiles, unreadable = _load_rows(cells, cell_dir_of, indices)
    left_out += unreadable
    cells = cells[cells.cell_id.isin(tiles)]
    if cells.empty:
        return []
    written = []
    book = pages(cells)
    for k, page in enumerate(book, start=1):
        models = ", ".join(dict.fromkeys(page.model))
        where = f" — page {k}/{len(book)}: {models}" if len(book) > 1 else ""
        title = f"same seeds across settings — {board.dataset}{where} (column = sample index = seed)"
        stem = stem_in(out, f"grid_{board.dataset}" + (f"_p{k}" if k > 1 else ""))
        written += _plot_page(page, [tiles[c] for c in page.cell_id], indices, title, left_out, stem)
    return written
