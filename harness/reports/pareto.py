"""Cost views: quality vs measured latency and vs FLOPs with the Pareto front (95% interval bars on both axes),
and the "quality at equal budget" table (per budget on NFE / ms / GFLOPs, each model's best cell within it and
whether it is inside the noise of the best). Every view names the device its costs were measured on.

Written by ``write_results_report`` when a board has cost columns (harness/reports/cost_columns.py)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from harness.reports.board import Board
from harness.reports.cost_columns import COST_AXES, DEVICE_SEP, base_metric, cost_devices
from harness.reports.plots import draw_floor, draw_front, log_x_if_wide, pyplot, save_figure, stem_in
from harness.reports.tables import fmt, fmt_cfg, fmt_ci
from harness.store import atomic_write_bytes

MAX_BUDGETS = 6  # continuous axes (ms, GFLOPs): at most this many budgets, geometric between min and max


def device_of_column(board: Board, column: str) -> str:
    """The device a cost column was measured on ('' for NFE, which is counted, not measured)."""
    if column == "nfe_mean":
        return ""
    if DEVICE_SEP in column:
        return column.split(DEVICE_SEP, 1)[1]
    return ", ".join(cost_devices(board.rows))


def axes_of(board: Board) -> list[str]:
    """The cost axes of a board: NFE, and each device's latency and FLOPs columns present."""
    return ["nfe_mean"] + [c for c in board.cost_metrics if base_metric(c) in COST_AXES and c in board.table]


def qualities_of(board: Board) -> list[str]:
    return (["mmhm"] if board.scores is not None else []) + list(board.metrics)


def _higher(board: Board, quality: str) -> bool:
    return True if quality == "mmhm" else bool(board.higher_is_better[quality])


def _label(board: Board, column: str) -> str:
    where = device_of_column(board, column)
    text = COST_AXES[base_metric(column)]
    return f"{text}, measured on {where}" if where else f"{text} (counted, no device)"


def _err(values: pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray | None:
    """matplotlib's asymmetric error bars (2 × N), or None when the column has no intervals."""
    if low.isna().all() or high.isna().all():
        return None
    return np.vstack([(values - low.fillna(values)).clip(lower=0), (high.fillna(values) - values).clip(lower=0)])


def _ci(t: pd.DataFrame, column: str) -> tuple[pd.Series, pd.Series]:
    if column == "nfe_mean" or f"{column}_ci_low" not in t:
        return t[column], t[column]  # NFE and FLOPs are exact
    return t[f"{column}_ci_low"], t[f"{column}_ci_high"]


def plot_quality_vs_measured_cost(board: Board, quality: str, column: str, out: Path) -> list[Path]:
    """Cells as points with 95% intervals on both axes; the Pareto front over all models (on the point values)."""
    plt = pyplot()
    t = board.table.dropna(subset=[quality, column])
    if t.empty:
        return []
    higher = _higher(board, quality)
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for model, part in t.groupby("model", sort=True):
        x_lo, x_hi = _ci(part, column)
        ax.errorbar(part[column], part[quality], xerr=_err(part[column], x_lo, x_hi),
                    yerr=_err(part[quality], *_ci(part, quality)), fmt="o", ms=4, capsize=2, lw=0.8, label=model)
    draw_front(ax, t, column, quality, higher)
    if quality != "mmhm":
        draw_floor(ax, board, quality)
    log_x_if_wide(ax, t[column])
    ax.set_xlabel(_label(board, column))
    ax.set_ylabel(f"{quality} ({'higher' if higher else 'lower'} is better)")
    where = device_of_column(board, column)
    ax.set_title(f"{quality} vs {base_metric(column)} — {board.dataset}" + (f", measured on {where}" if where else ""),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    name = f"pareto_{quality}_vs_{base_metric(column)}_{board.dataset}" + (f"_{where}" if DEVICE_SEP in column else "")
    return save_figure(fig, stem_in(out, name))


def budgets(values: pd.Series, exact: bool) -> list[float]:
    """NFE: every distinct value. Measured axes: the distinct values, or at most MAX_BUDGETS geometric steps
    from the cheapest to the dearest cell (rounded to 2 significant digits, the dearest always included)."""
    distinct = sorted(set(float(v) for v in values.dropna()))
    if exact or len(distinct) <= MAX_BUDGETS or distinct[0] <= 0:
        return distinct
    grid = np.geomspace(distinct[0], distinct[-1], MAX_BUDGETS)
    rounded = [float(f"{g:.2g}") for g in grid[:-1]]
    return sorted(set([max(r, distinct[0]) for r in rounded] + [distinct[-1]]))


def _overlap(a_lo: float, a_hi: float, b_lo: float, b_hi: float) -> bool | None:
    if any(pd.isna(x) for x in (a_lo, a_hi, b_lo, b_hi)):
        return None
    return a_lo <= b_hi and b_lo <= a_hi


def equal_budget_table(board: Board, quality: str, column: str) -> pd.DataFrame:
    """Per budget: each model's best cell (on ``quality``) among its cells costing at most the budget, and
    whether it is inside the noise of the budget's best cell (95% intervals overlap)."""
    t = board.table.dropna(subset=[quality, column])
    higher = _higher(board, quality)
    lo_col, hi_col = f"{quality}_ci_low", f"{quality}_ci_high"
    out = []
    for budget in budgets(t[column], exact=column == "nfe_mean"):
        within = t[t[column] <= budget * (1 + 1e-12)]
        best = within.sort_values(quality, ascending=not higher).groupby("model", sort=False).head(1)
        best = best.sort_values(quality, ascending=not higher)
        top = best.iloc[0]
        for i, (_, r) in enumerate(best.iterrows()):
            same = _overlap(r[lo_col], r[hi_col], top[lo_col], top[hi_col])
            verdict = ("best" if i == 0 else "no interval" if same is None
                       else "≈ best (CIs overlap)" if same else "worse (CIs disjoint)")
            out.append({"budget": fmt(budget), "model": r.model, "steps": int(r.steps), "cfg": fmt_cfg(r.cfg),
                        base_metric(column) if column != "nfe_mean" else "NFE": fmt(r[column]),
                        quality: fmt_ci(r[quality], r[lo_col], r[hi_col]), "vs best": verdict})
    return pd.DataFrame(out)


def _sections(boards: list[Board]) -> list[tuple[str, str, pd.DataFrame]]:
    """(heading, measured-on line, table) of every equal-budget table."""
    out = []
    for b in boards:
        if not b.cost_metrics or b.table.empty:
            continue
        for column in axes_of(b):
            where = device_of_column(b, column)
            line = (f"Budget on {COST_AXES[base_metric(column)]}, measured on {where}." if where else
                    f"Budget on NFE (counted exactly; no device). Cost columns of this table measured on "
                    f"{', '.join(cost_devices(b.rows))}.")
            for quality in qualities_of(b):
                table = equal_budget_table(b, quality, column)
                if not table.empty:
                    out.append((f"{b.dataset}: {quality} at equal {base_metric(column).replace('_mean', '')}",
                                line, table))
    return out


INTRO = ("Each model's best cell among those costing at most the budget; \"≈ best\" when its 95% interval overlaps "
         "the budget's best cell's (the difference is inside the noise). Measured budgets (ms) compare p50 values.")


def equal_budget_markdown(boards: list[Board]) -> str:
    lines = ["# Quality at equal budget", "", INTRO, ""]
    for heading, line, table in _sections(boards):
        lines += [f"## {heading}", "", line, "", table.to_markdown(index=False), ""]
    return "\n".join(lines)


def equal_budget_html(boards: list[Board]) -> str:
    parts = ["<h1>Quality at equal budget</h1>", f"<p>{html.escape(INTRO)}</p>"]
    for heading, line, table in _sections(boards):
        parts += [f"<h2>{html.escape(heading)}</h2>", f"<p>{html.escape(line)}</p>", table.to_html(index=False)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Quality at equal budget"
            "</title></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_cost_views(boards: list[Board], out: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """({dataset: plots/pareto_*.{png,pdf}}, [equal_budget.md, equal_budget.html]) when any board has cost
    columns; ({}, []) otherwise."""
    boards = [b for b in boards if b.cost_metrics and not b.table.empty]
    if not boards:
        return {}, []
    out = Path(out)
    plots: dict[str, list[Path]] = {}
    for b in boards:
        for column in axes_of(b)[1:]:  # NFE plots exist already (plots.py); these are the measured axes
            for quality in qualities_of(b):
                plots.setdefault(b.dataset, []).extend(plot_quality_vs_measured_cost(b, quality, column,
                                                                                     out / "plots"))
    tables = []
    for name, text in (("equal_budget.md", equal_budget_markdown(boards)),
                       ("equal_budget.html", equal_budget_html(boards))):
        atomic_write_bytes(out / name, text.encode())
        tables.append(out / name)
    return plots, tables


__all__ = ["budgets", "equal_budget_markdown", "equal_budget_table", "write_cost_views"]
