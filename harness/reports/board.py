"""The analysis behind every leaderboard view: per dataset, one row per cell with metric values, CIs,
MMHM (+ bootstrap CI), its rank, noise flags and the per-model selection. Formats live in tables.py."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.metrics import available_metrics, get_metric
from harness.metrics.bootstrap import covers
from harness.plan.real_floor import floor_mask
from harness.reports.cost_columns import (
    cost_device_note,
    cost_order,
    is_cost_metric,
    quality_metrics,
    split_cost_devices,
)
from harness.reports.mmhm import (
    Bounds,
    MMHMTable,
    add_mmhm_ci,
    default_metrics,
    floor_bounds,
    mmhm,
    noise_flags,
    select,
)
from harness.reports.results import Results

SETTINGS = ["cell_id", "model", "steps", "cfg", "nfe_mean", "sec_per_image", "n", "run", "seed_policy"]


@dataclass
class Board:
    dataset: str
    rows: pd.DataFrame  # the dataset's tidy rows
    table: pd.DataFrame  # one row per cell: settings, <metric>, <metric>_ci_low/high, mmhm..., rank, noise
    metrics: list[str]  # metric columns, in display order
    higher_is_better: dict[str, bool]
    scores: MMHMTable | None
    selection: pd.DataFrame | None  # mmhm.select plus rank/noise among the models' MMHM choices
    notes: list[str] = field(default_factory=list)
    # The real-data floor cells (harness/plan/real_floor.py), shaped like ``table`` without MMHM: shown, never ranked.
    floor: pd.DataFrame = field(default_factory=pd.DataFrame)
    # Cost columns (harness/reports/cost_columns.py): shown after the quality metrics, never in MMHM unless named.
    cost_metrics: list[str] = field(default_factory=list)


def _wide(rows: pd.DataFrame) -> pd.DataFrame:
    cost = rows.metric.map(is_cost_metric)  # a cell's settings (NFE, s/img) come from its quality rows first
    cells = pd.concat([rows[~cost], rows[cost]]).drop_duplicates("cell_id")[SETTINGS].set_index("cell_id")
    for col in ("value", "ci_low", "ci_high"):
        wide = rows.pivot_table(index="cell_id", columns="metric", values=col, aggfunc="first", dropna=False)
        suffix = "" if col == "value" else f"_{col}"
        cells = cells.join(wide.add_suffix(suffix))
    return cells


def _monotone(metric: str) -> bool:
    """The registered metric's ``monotone`` flag (a metric no registry knows, e.g. from a plugin not loaded: True)."""
    try:
        return get_metric(metric).monotone
    except HarnessError:
        return True


def _mmhm_or_note(rows: pd.DataFrame, metrics: Sequence[str] | None, bounds: Bounds | None,
                  notes: list[str], floor: pd.DataFrame | None = None) -> MMHMTable | None:
    chosen = tuple(metrics) if metrics else default_metrics(rows.metric)
    if not chosen:
        # No paper metric at all (e.g. the offline MNIST world): combine every quality metric present, and say
        # so. Cost rows are an axis, not a quality: only named with --mmhm-metrics do they enter MMHM.
        quality = sorted(quality_metrics(set(rows.metric)))
        chosen = tuple(m for m in quality if _monotone(m))
        if len(chosen) < len(quality):
            notes.append(f"Left out of MMHM (better only up to a target value, not monotone): "
                         f"{', '.join(m for m in quality if m not in chosen)}.")
        if not chosen:
            notes.append("MMHM not computed: no quality metric it combines by default (these rows hold cost "
                         "metrics only, or metrics better only up to a target); name them with --mmhm-metrics.")
            return None
        notes.append(f"None of the paper's MMHM metrics (fid, is, clip_score, pickscore) is present, so MMHM "
                     f"combines every quality metric present ({', '.join(chosen)}); choose others with --mmhm-metrics.")
    absent = [m for m in chosen if m not in set(rows.metric)]
    if absent:
        notes.append(f"MMHM not computed: metrics {absent} are absent from this dataset's rows.")
        return None
    if floor is not None:
        bounds = floor_bounds(rows, floor, chosen)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = mmhm(rows, chosen, bounds)
    notes += [str(w.message) for w in caught]
    return scores


def _describe(scores: MMHMTable) -> str:
    b = scores.bounds
    where = (f"frozen bounds from {b.frozen_from}" if b.frozen_from
             else f"bounds from the {len(b.defined_by)} cells of this table")
    ranges = ", ".join(f"{m} [{lo:.4g}, {hi:.4g}]" for m, (lo, hi) in b.lo_hi.items())
    text = (f"MMHM over {', '.join(scores.metrics)} (ε = 1e-3; {where}: {ranges}). It changes when rows are "
            f"added or removed; a cell worst on any one metric scores ≤ {len(scores.metrics)}/1000.")
    if scores.dropped:
        text += f" Cells without every MMHM metric are left out: {', '.join(scores.dropped)}."
    return text


def _small_n_notes(rows: pd.DataFrame) -> list[str]:
    """One note per Fréchet-type metric (by kind: any metric with a ``min_reliable_n``, i.e. fid, fid_tf1,
    fid_clean, fid_mnist, fd_dinov2) scored on fewer samples than its feature dimension."""
    notes = []
    for name in sorted(set(rows.metric) & set(available_metrics())):  # rows of an unknown metric: no kind
        limit = getattr(get_metric(name), "min_reliable_n", None)
        n = int(rows.loc[rows.metric == name, "n"].min())
        if limit is not None and n < limit:
            notes.append(f"{name} here uses n = {n} samples per cell (< {limit}, its feature dimension): the "
                         f"covariance is rank-deficient and the value is biased upward; compare {name} only at "
                         f"equal n.")
    return notes


def _drop_non_covering(rows: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Rows whose stored interval excludes its value (e.g. written by an older harness) lose the interval and
    are named in a note: such an interval is never printed."""
    has = rows.ci_low.notna() & rows.ci_high.notna()
    bad = has & ~pd.Series([covers(v, lo, hi) for v, lo, hi in zip(rows.value, rows.ci_low, rows.ci_high,
                                                                      strict=True)], index=rows.index)
    if not bad.any():
        return rows
    first = rows[bad].iloc[0]
    notes.append(f"{int(bad.sum())} stored interval(s) exclude their own value and are not shown (e.g. cell "
                 f"{first.cell_id} {first.metric} {first.value:.6g} [{first.ci_low:.6g}, {first.ci_high:.6g}]); "
                 f"re-score with this harness for valid intervals (docs/metrics.md).")
    return rows.assign(ci_low=rows.ci_low.mask(bad), ci_high=rows.ci_high.mask(bad))


def _floor_note(floor: pd.DataFrame) -> str:
    names = ", ".join(sorted(set(floor.model)))
    return (f"Real-data floor ({names}): real images drawn per requested class with the same seeds and n, scored "
            f"exactly like the models (harness/plan/real_floor.py); shown for scale, never ranked.")


def build_board(results: Results, dataset: str, rows: pd.DataFrame, mmhm_metrics: Sequence[str] | None = None,
                bounds: Bounds | None = None, mmhm_best: str = "rows") -> Board:
    """``mmhm_best="real"``: each MMHM metric's best bound is the real-data floor's value (the worst stays the
    worst cell's); refused when this dataset has no floor, or several, or frozen ``bounds`` are also given."""
    notes: list[str] = []
    rows = _drop_non_covering(rows, notes)
    rows = split_cost_devices(rows, notes)
    metrics = sorted(quality_metrics(set(rows.metric)))
    cost_metrics = cost_order(set(rows.metric) - set(metrics))
    if cost_metrics:
        notes.append(cost_device_note(rows))
    hib = rows.groupby("metric").higher_is_better.first().astype(bool).to_dict()
    is_floor = floor_mask(rows)
    floor_rows, rows = rows[is_floor], rows[~is_floor]
    floor = _wide(floor_rows) if not floor_rows.empty else pd.DataFrame()
    if not floor.empty:
        notes.append(_floor_note(floor))
    if mmhm_best == "real":
        if bounds is not None:
            raise HarnessError("--mmhm-best real and --bounds both fix MMHM's bounds; give one")
        if len(floor) != 1:
            raise HarnessError(f"--mmhm-best real: dataset {dataset!r} has {len(floor)} real-data floor cells; "
                               f"expected one (a protocol's `real: [SOURCE]`, harness/plan/real_floor.py)")
    elif mmhm_best != "rows":
        raise HarnessError(f"--mmhm-best {mmhm_best!r}: expected 'rows' (bounds from the table's cells) or 'real'")
    if rows.empty:  # only the floor was scored on this dataset
        return Board(dataset, floor_rows, floor.iloc[0:0].reset_index(), metrics, hib, None, None, notes,
                     floor.reset_index(), cost_metrics)
    table = _wide(rows)
    scores = _mmhm_or_note(rows, mmhm_metrics, bounds, notes, floor if mmhm_best == "real" else None)
    selection = None
    if scores is not None:
        scores = add_mmhm_ci(scores, results.run_dir_of)
        notes.insert(0, _describe(scores))
        table = table.join(scores.table[["mmhm", "mmhm_ci_low", "mmhm_ci_high"]])
        ranked = table.mmhm.notna()
        table["rank"], table["noise"] = np.nan, False
        table.loc[ranked, "rank"] = table.loc[ranked, "mmhm"].rank(ascending=False, method="min")
        table.loc[ranked, "noise"] = noise_flags(table.loc[ranked, "mmhm"], table.loc[ranked, "mmhm_ci_low"],
                                                 table.loc[ranked, "mmhm_ci_high"])
        if table.mmhm_ci_low.isna().all():
            notes.append("No bootstrap replicates found (bootstrap/<cell_id>/<metric>.npy): MMHM has no CI, "
                         "so rank changes cannot be tested against the noise.")
        selection = _selection(rows, scores)
        table = table.sort_values(["mmhm", "model", "steps"], ascending=[False, True, True], na_position="last")
    else:
        table = table.sort_values(["model", "steps", "cfg"])
    notes += _small_n_notes(pd.concat([rows, floor_rows]))
    return Board(dataset, rows, table.reset_index(), metrics, hib, scores, selection, notes,
                 floor.reset_index() if not floor.empty else pd.DataFrame(), cost_metrics)


def _selection(rows: pd.DataFrame, scores: MMHMTable) -> pd.DataFrame:
    """mmhm.select, with each model's MMHM choice ranked against the other models' (noise-flagged)."""
    sel = select(rows, scores)
    ci = scores.table[["mmhm_ci_low", "mmhm_ci_high"]]
    sel = sel.join(ci, on="cell_id")
    best = sel[sel.criterion == "MMHM"]
    flags = dict(zip(best.model, noise_flags(best.mmhm, best.mmhm_ci_low, best.mmhm_ci_high), strict=True))
    ranks = dict(zip(best.model, best.mmhm.rank(ascending=False, method="min"), strict=True))
    sel["model_rank"] = sel.model.map(ranks)
    sel["noise"] = [bool(flags[m]) and c == "MMHM" for m, c in zip(sel.model, sel.criterion, strict=True)]
    return sel.sort_values(["model_rank", "model"], kind="stable").reset_index(drop=True)


def build_boards(results: Results, mmhm_metrics: Sequence[str] | None = None,
                 bounds: Bounds | None = None, mmhm_best: str = "rows") -> list[Board]:
    """One board per dataset (the paper's MMHM row set is one dataset's table)."""
    frame = results.frame
    if frame.empty:
        return []
    absent = [m for m in mmhm_metrics or () if m not in set(frame.metric)]
    if absent:
        raise HarnessError(f"MMHM metrics {absent} are not in the results (present: {sorted(set(frame.metric))})")
    bad = frame[~np.isfinite(frame.value.astype(float))]
    if not bad.empty:
        r = bad.iloc[0]
        raise HarnessError(f"cell {r.cell_id} metric {r.metric} is {r.value}; refusing to report non-finite values")
    return [build_board(results, ds, part, mmhm_metrics, bounds, mmhm_best)
            for ds, part in frame.groupby("dataset", sort=True)]
