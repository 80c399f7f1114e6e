"""The paper's plots, each as PNG and PDF: metric vs steps / guidance, quality vs NFE and seconds per image
with the Pareto front, the metric correlation matrix and steps × cfg heatmaps of MMHM."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from harness.reports.board import Board
from harness.store import atomic_write_bytes

FORMATS = ("png", "pdf")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def safe_name(name: str) -> str:
    """A file name from metric and dataset ids (which may hold '/' or spaces, e.g. HF dataset ids)."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name)


def stem_in(out: Path, name: str) -> Path:
    return out / safe_name(name)


def save_figure(fig, stem: Path) -> list[Path]:
    """stem.png and stem.pdf, each written atomically; the figure is closed."""
    plt = pyplot()
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in FORMATS:
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=100, metadata={"CreationDate": None} if ext == "pdf" else None)
        path = stem.with_name(f"{stem.name}.{ext}")
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    plt.close(fig)
    return paths


def _direction(higher: bool) -> str:
    return "higher is better" if higher else "lower is better"


def pareto_front(cost: Sequence[float], quality: Sequence[float], higher_is_better: bool) -> np.ndarray:
    """Mask of the points no other point beats: cost ≤ and quality at least as good, one of them strictly."""
    c = np.asarray(cost, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64) * (1 if higher_is_better else -1)
    keep = np.ones(len(c), dtype=bool)
    for i in range(len(c)):
        dominated = (c <= c[i]) & (q >= q[i]) & ((c < c[i]) | (q > q[i]))
        keep[i] = not dominated.any()
    return keep


def draw_front(ax, table: pd.DataFrame, x: str, y: str, higher_is_better: bool) -> None:
    """The Pareto front of ``table`` over columns (x = cost, lower better; y = quality) as a step line, each
    point on it labelled with its steps and cfg."""
    front = table[pareto_front(table[x], table[y], higher_is_better)].sort_values(x)
    ax.step(front[x], front[y], where="post", color="black", lw=1, label="Pareto front")
    for _, r in front.iterrows():
        cfg = "" if pd.isna(r.cfg) else f", cfg {r.cfg:g}"
        ax.annotate(f"{r.steps} st{cfg}", (r[x], r[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")


def log_x_if_wide(ax, x: pd.Series) -> None:
    """A log x axis with plain-number labels when the positive values span more than a factor 4."""
    if x.gt(0).all() and x.max() > 4 * x.min():
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())  # plain numbers; log-style labels cost layout time
        ax.xaxis.set_minor_formatter(NullFormatter())


def draw_floor(ax, board: Board, metric: str) -> None:
    """The real-data floor of ``metric`` as a dashed horizontal line (its CI as a band): scale for every panel."""
    if board.floor.empty or metric not in board.floor:
        return
    for _, r in board.floor.iterrows():
        if pd.isna(r[metric]):
            continue
        ax.axhline(r[metric], color="0.35", ls="--", lw=1, label=f"real data ({r.model})")
        lo, hi = r.get(f"{metric}_ci_low"), r.get(f"{metric}_ci_high")
        if lo is not None and hi is not None and not (pd.isna(lo) or pd.isna(hi)):
            ax.axhspan(lo, hi, color="0.35", alpha=0.12, lw=0)


def _panel_lines(board: Board, metric: str, x: str, group: str, stem: Path, xlabel: str, log_x: bool) -> list[Path]:
    """One panel per model, one line per value of ``group``, x = ``x`` (shaded CI where present)."""
    plt = pyplot()
    t = board.table
    models = sorted(t.model.unique())
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models, strict=True):
        sub = t[t.model == model]
        for key, line in sub.groupby(sub[group].fillna(-1.0), sort=True):
            line = line.sort_values(x)
            label = (f"{group} {key:g}" if key >= 0 else "no guidance") if group == "cfg" else f"{key:g} steps"
            ax.plot(line[x], line[metric], marker="o", label=label)
            lo, hi = line[f"{metric}_ci_low"], line[f"{metric}_ci_high"]
            if lo.notna().all() and hi.notna().all():
                ax.fill_between(line[x], lo, hi, alpha=0.2)
        draw_floor(ax, board, metric)
        if log_x:
            ax.set_xscale("log", base=2)
        ax.set_title(model)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(f"{metric} ({_direction(board.higher_is_better[metric])})")
    fig.suptitle(f"{metric} vs {xlabel} — {board.dataset}, n={t.n.min()}/cell", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, stem)


def plot_metric_vs_steps(board: Board, metric: str, out: Path) -> list[Path]:
    stem = stem_in(out, f"{metric}_vs_steps_{board.dataset}")
    return _panel_lines(board, metric, "steps", "cfg", stem, "steps", True)


def plot_metric_vs_guidance(board: Board, metric: str, out: Path) -> list[Path]:
    """Only models with at least two guidance values contribute; [] when none has a sweep."""
    t = board.table
    swept = [m for m, part in t.groupby("model") if part.cfg.dropna().nunique() >= 2]
    if not swept:
        return []
    sub = Board(board.dataset, board.rows, t[t.model.isin(swept)], board.metrics, board.higher_is_better,
                board.scores, board.selection, floor=board.floor)
    stem = stem_in(out, f"{metric}_vs_guidance_{board.dataset}")
    return _panel_lines(sub, metric, "cfg", "steps", stem, "guidance", False)


COSTS = {"nfe": ("nfe_mean", "NFE per image"), "sec": ("sec_per_image", "seconds per image")}


def plot_quality_vs_cost(board: Board, metric: str, cost: str, out: Path) -> list[Path]:
    """Every cell as a point coloured by model; the Pareto front over all models as a step line."""
    plt = pyplot()
    column, label = COSTS[cost]
    t = board.table.dropna(subset=[metric, column])
    higher = board.higher_is_better[metric]
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for model, part in t.groupby("model", sort=True):
        ax.scatter(part[column], part[metric], label=model, s=28)
    draw_front(ax, t, column, metric, higher)
    draw_floor(ax, board, metric)
    log_x_if_wide(ax, t[column])
    ax.set_xlabel(label)
    ax.set_ylabel(f"{metric} ({_direction(higher)})")
    ax.set_title(f"{metric} vs {label} — {board.dataset}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, stem_in(out, f"{metric}_vs_{cost}_{board.dataset}"))


def metric_correlation(board: Board) -> pd.DataFrame:
    """Spearman rank correlation across the cells between every metric (and MMHM when present)."""
    cols = list(board.metrics) + (["mmhm"] if board.scores is not None else [])
    return board.table[cols].astype(float).corr(method="spearman")


def plot_correlation(board: Board, out: Path) -> list[Path]:
    """[] with fewer than two metrics or three cells (a correlation of two points says nothing)."""
    if len(board.metrics) < 2 or len(board.table) < 3:
        return []
    plt = pyplot()
    corr = metric_correlation(board)
    fig, ax = plt.subplots(figsize=(1.1 * len(corr) + 2.5, 1.0 * len(corr) + 1.8))
    im = ax.imshow(corr.to_numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(corr)), corr.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(corr)), corr.index)
    for (i, j), v in np.ndenumerate(corr.to_numpy()):
        ax.text(j, i, "–" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.8, label="Spearman ρ")
    ax.set_title(f"metric correlation over {len(board.table)} cells — {board.dataset}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, stem_in(out, f"correlation_{board.dataset}"))


def plot_mmhm_heatmap(board: Board, out: Path) -> list[Path]:
    """Steps × cfg grid of MMHM, one panel per model; [] without MMHM."""
    if board.scores is None:
        return []
    plt = pyplot()
    t = board.table.dropna(subset=["mmhm"])
    models = sorted(t.model.unique())
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models) + 1, 3.4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        part = t[t.model == model].assign(guidance=lambda d: d.cfg.map(lambda c: "none" if pd.isna(c) else f"{c:g}"))
        grid = part.pivot_table(index="steps", columns="guidance", values="mmhm", aggfunc="first")
        grid = grid[sorted(grid.columns, key=lambda g: -1.0 if g == "none" else float(g))]
        im = ax.imshow(grid.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(grid.shape[1]), grid.columns)
        ax.set_yticks(range(grid.shape[0]), grid.index)
        for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="w" if v < 0.5 else "k")
        ax.set_xlabel("cfg")
        ax.set_ylabel("steps")
        ax.set_title(model)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="MMHM")
    fig.suptitle(f"MMHM over {', '.join(board.scores.metrics)} — {board.dataset}", fontsize=10)
    return save_figure(fig, stem_in(out, f"mmhm_heatmap_{board.dataset}"))


def write_plots(board: Board, out: Path) -> list[Path]:
    """Every plot of one board; none when it has no model cells (a dataset where only the floor was scored)."""
    paths: list[Path] = []
    if board.table.empty:
        return paths
    for metric in board.metrics:
        paths += plot_metric_vs_steps(board, metric, out)
        paths += plot_metric_vs_guidance(board, metric, out)
        for cost in COSTS:
            paths += plot_quality_vs_cost(board, metric, cost, out)
    paths += plot_correlation(board, out)
    paths += plot_mmhm_heatmap(board, out)
    return paths
