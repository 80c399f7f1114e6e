"""``harness report RUN --compare OTHER``: paired differences RUN − OTHER per (dataset, model, steps, cfg,
metric), with a 95% CI, flagging differences whose CI contains 0 ("inside the noise").

CI of a difference: from bootstrap replicates when both cells have them with equal B (each side's replicates
centred on its own value, replicate b minus replicate b, the 2.5/97.5 percentiles moved onto Δ: see
harness/metrics/bootstrap.py); otherwise from the rows' own CIs, each side's lower and upper half-widths
combined in quadrature (conservative when the two runs share seeds, which correlates their errors positively).
Two values closer than ``IDENTICAL_RTOL`` (relative) are "identical": executors and thread counts change
float64 sums in the last digits (~1e-9 relative), which is no difference between runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.plan.real_floor import floor_mask
from harness.reports.board import build_boards
from harness.reports.cost_columns import quality_metrics
from harness.reports.mmhm import (
    Bounds,
    bounds_from_rows,
    centred_replicates,
    default_metrics,
    load_replicates,
    mmhm,
    mmhm_replicates,
    shifted_interval,
)
from harness.reports.results import Results
from harness.reports.tables import fmt, fmt_cfg, fmt_ci

KEY = ["dataset", "model", "steps", "_cfg", "metric"]
IDENTICAL_RTOL = 1e-6  # documented in docs/metrics.md; far above float noise, far below any CI width here


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(_cfg=frame.cfg.fillna(-1.0))


def _difference_ci(run: Results, other: Results, a: pd.Series, b: pd.Series) -> tuple[float, float, str]:
    ra = load_replicates(run.run_dir_of[a.cell_id], a.cell_id, a.metric)
    rb = load_replicates(other.run_dir_of[b.cell_id], b.cell_id, b.metric)
    delta = a.value - b.value
    if ra is not None and rb is not None and ra.size == rb.size:
        draws = centred_replicates(a.value, ra) - centred_replicates(b.value, rb)
        lo, hi = shifted_interval(delta, draws, f"Δ of {a.metric}")
        return lo, hi, "bootstrap"
    sides = [a.value - a.ci_low, a.ci_high - a.value, b.value - b.ci_low, b.ci_high - b.value]
    if all(np.isfinite(sides)):  # Δ's lower side takes a's lower and b's upper half-width, and vice versa
        return delta - float(np.hypot(sides[0], sides[3])), delta + float(np.hypot(sides[1], sides[2])), "row CIs"
    return np.nan, np.nan, "none"


def identical(a: float, b: float) -> bool:
    """Equal up to ``IDENTICAL_RTOL`` relative (float noise between executors), or both exactly zero."""
    return bool(abs(a - b) <= IDENTICAL_RTOL * max(abs(a), abs(b)))


def compare_runs(run: Results, other: Results) -> pd.DataFrame:
    """One row per setting × metric present in both runs; settings present in one run only are listed
    with NaN on the other side, so nothing disappears silently."""
    cols = KEY + ["cell_id", "value", "ci_low", "ci_high", "variant", "higher_is_better", "cfg"]
    a, b = _keyed(run.frame)[cols], _keyed(other.frame)[cols]
    merged = a.merge(b, on=KEY, how="outer", suffixes=("", "_other"), indicator=True)
    variants = merged[(merged._merge == "both") & (merged.variant != merged.variant_other)]
    if not variants.empty:
        r = variants.iloc[0]
        raise HarnessError(f"{r.metric} on {r.model} ({r.dataset}) has variant {r.variant!r} in one run and "
                           f"{r.variant_other!r} in the other; differences across variants are not comparable")
    out = []
    for _, r in merged.iterrows():
        row = {"dataset": r.dataset, "model": r.model, "steps": int(r.steps),
               "cfg": r.cfg if r._merge != "right_only" else r.cfg_other, "metric": r.metric,
               "value": r.value, "value_other": r.value_other, "delta": np.nan, "ci_low": np.nan,
               "ci_high": np.nan, "ci_from": "", "verdict": ""}
        if r._merge != "both":
            row["verdict"] = "only in " + ("this run" if r._merge == "left_only" else "the other run")
        else:
            mine = pd.Series({"cell_id": r.cell_id, "metric": r.metric, "value": r.value,
                              "ci_low": r.ci_low, "ci_high": r.ci_high})
            theirs = pd.Series({"cell_id": r.cell_id_other, "metric": r.metric, "value": r.value_other,
                                "ci_low": r.ci_low_other, "ci_high": r.ci_high_other})
            lo, hi, source = _difference_ci(run, other, mine, theirs)
            delta = r.value - r.value_other
            row.update(delta=delta, ci_low=lo, ci_high=hi, ci_from=source,
                       verdict=_verdict(r.value, r.value_other, lo, hi, bool(r.higher_is_better)))
        out.append(row)
    frame = pd.DataFrame(out)
    return frame.sort_values(["dataset", "metric", "model", "steps", "cfg"], na_position="first").reset_index(drop=True)


def _verdict(value: float, value_other: float, lo: float, hi: float, higher_is_better: bool) -> str:
    delta = value - value_other
    if identical(value, value_other):
        return "identical"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no CI"
    if lo <= 0 <= hi:
        return "inside the noise"
    return "better" if (delta > 0) == higher_is_better else "worse"


def _mmhm_metrics(a: pd.DataFrame, b: pd.DataFrame, chosen: Sequence[str] | None) -> tuple[str, ...]:
    """As the leaderboard chooses: the given metrics, else the paper's four present in both runs, else every
    quality metric present in both (cost rows only when named)."""
    common = set(a.metric) & set(b.metric)
    return tuple(chosen) if chosen else (default_metrics(common) or tuple(sorted(quality_metrics(common))))


def mmhm_differences(run: Results, other: Results, mmhm_metrics: Sequence[str] | None = None,
                     bounds: Bounds | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Per (dataset, model, steps, cfg): MMHM in each run under ONE set of bounds, Δ = run − other, and the
    95% CI of Δ from the paired bootstrap replicates (MMHM replicate b of this run minus replicate b of the
    other, each computed under those bounds). Bounds: the frozen ``bounds`` if given, else min/max over the
    cells of both runs together (MMHM under each run's own bounds is not comparable). Returns the table
    and one line per dataset saying which bounds were used (or why no Δ was computed)."""
    out, notes = [], []
    for dataset in sorted(set(run.frame.dataset) & set(other.frame.dataset)):
        a, b = (r.frame[(r.frame.dataset == dataset) & ~floor_mask(r.frame)] for r in (run, other))
        metrics = _mmhm_metrics(a, b, mmhm_metrics)
        if not metrics or any(m not in set(a.metric) or m not in set(b.metric) for m in metrics):
            notes.append(f"{dataset}: MMHM Δ not computed: metrics {list(metrics)} are not in both runs.")
            continue
        try:
            shared = bounds or _joint_bounds(a, b, metrics)
            sides = [_mmhm_side(results, rows, metrics, shared) for results, rows in ((run, a), (other, b))]
        except HarnessError as err:  # e.g. no cell has every metric: say so, keep the other datasets
            notes.append(f"{dataset}: MMHM Δ not computed: {err}")
            continue
        where = (f"frozen bounds from {shared.frozen_from}" if shared.frozen_from
                 else f"bounds over the {len(shared.defined_by)} cells of both runs")
        notes.append(f"{dataset}: MMHM over {', '.join(metrics)} with {where}: "
                     + ", ".join(f"{m} [{lo:.4g}, {hi:.4g}]" for m, (lo, hi) in shared.lo_hi.items()))
        merged = sides[0].merge(sides[1], on=["model", "steps", "_cfg"], how="outer", suffixes=("", "_other"),
                                indicator=True)
        out += [_mmhm_row(dataset, r) for _, r in merged.iterrows()]
    columns = ["dataset", "model", "steps", "cfg", "mmhm", "mmhm_other", "delta", "ci_low", "ci_high", "verdict"]
    frame = pd.DataFrame(out, columns=columns)
    return frame.sort_values(["dataset", "model", "steps", "cfg"], na_position="first").reset_index(drop=True), notes


def _joint_bounds(a: pd.DataFrame, b: pd.DataFrame, metrics: tuple[str, ...]) -> Bounds:
    """Both runs' cells as one row set; a cell id may occur in both runs, so each side's ids are tagged."""
    both = pd.concat([a.assign(cell_id="this:" + a.cell_id), b.assign(cell_id="other:" + b.cell_id)])
    return bounds_from_rows(both, metrics)


def _mmhm_side(results: Results, rows: pd.DataFrame, metrics: tuple[str, ...], bounds: Bounds) -> pd.DataFrame:
    """Per cell of one run: setting, MMHM under ``bounds`` and its bootstrap replicates (None without)."""
    scores = mmhm(rows, metrics, bounds)
    reps = mmhm_replicates(scores, results.run_dir_of)
    cells = rows.drop_duplicates("cell_id").set_index("cell_id")[["model", "steps", "cfg"]]
    table = cells.join(scores.table[["mmhm"]], how="inner").reset_index()
    table["reps"] = [reps.get(c) for c in table.cell_id]
    return _keyed(table).drop(columns="cell_id")


def _mmhm_row(dataset: str, r: pd.Series) -> dict:
    row = {"dataset": dataset, "model": r.model, "steps": int(r.steps),
           "cfg": r.cfg if r._merge != "right_only" else r.cfg_other, "mmhm": r.mmhm, "mmhm_other": r.mmhm_other,
           "delta": np.nan, "ci_low": np.nan, "ci_high": np.nan}
    if r._merge != "both":
        return {**row, "verdict": "only in " + ("this run" if r._merge == "left_only" else "the other run")}
    delta = float(r.mmhm - r.mmhm_other)
    mine, theirs = r.reps, r.reps_other
    paired = isinstance(mine, np.ndarray) and isinstance(theirs, np.ndarray) and mine.size == theirs.size
    lo, hi = shifted_interval(delta, mine - theirs, "MMHM Δ") if paired else (np.nan, np.nan)
    return {**row, "delta": delta, "ci_low": lo, "ci_high": hi,
            "verdict": _verdict(float(r.mmhm), float(r.mmhm_other), lo, hi, True)}


def _setting(steps: int, cfg: float) -> str:
    return f"{int(steps)} steps, cfg {fmt_cfg(cfg)}"


def selection_changes(run: Results, other: Results, mmhm_metrics: Sequence[str] | None = None,
                      bounds: Bounds | None = None) -> pd.DataFrame:
    """Per (dataset, model): the MMHM choice in each run. When it moved, say whether this run can tell the two
    settings apart: their MMHM CIs (this run's bootstrap) overlapping means the change is inside the noise."""
    mine = {b.dataset: b for b in build_boards(run, mmhm_metrics, bounds) if b.selection is not None}
    theirs = {b.dataset: b for b in build_boards(other, mmhm_metrics, bounds) if b.selection is not None}
    out = []
    for dataset in sorted(set(mine) & set(theirs)):
        a, b = (board.selection[board.selection.criterion == "MMHM"].set_index("model")
                for board in (mine[dataset], theirs[dataset]))
        table = mine[dataset].table.assign(_cfg=lambda t: t.cfg.fillna(-1.0)).set_index(["model", "steps", "_cfg"])
        for model in sorted(set(a.index) & set(b.index)):
            new, old = a.loc[model], b.loc[model]
            row = {"dataset": dataset, "model": model, "chosen": _setting(new.steps, new.cfg),
                   "chosen_other": _setting(old.steps, old.cfg), "mmhm": new.mmhm, "mmhm_ci_low": new.mmhm_ci_low,
                   "mmhm_ci_high": new.mmhm_ci_high, "mmhm_of_other_choice": np.nan, "other_ci_low": np.nan,
                   "other_ci_high": np.nan}
            key = (model, int(old.steps), -1.0 if pd.isna(old.cfg) else float(old.cfg))
            if row["chosen"] == row["chosen_other"]:
                row["verdict"] = "same setting"
            elif key not in table.index:
                row["verdict"] = "other run's choice not in this run"
            else:
                prev = table.loc[key]
                row.update(mmhm_of_other_choice=prev.mmhm, other_ci_low=prev.mmhm_ci_low,
                           other_ci_high=prev.mmhm_ci_high)
                cis = [new.mmhm_ci_low, new.mmhm_ci_high, prev.mmhm_ci_low, prev.mmhm_ci_high]
                if not np.isfinite(cis).all():
                    row["verdict"] = "changed (no CI to test it)"
                elif cis[0] <= cis[3] and cis[2] <= cis[1]:
                    row["verdict"] = "changed, inside the noise"
                else:
                    row["verdict"] = "changed"
            out.append(row)
    return pd.DataFrame(out)


def _ci_text(lo: float, hi: float) -> str:
    return f"[{fmt(lo)}, {fmt(hi)}]" if np.isfinite(lo) else "–"


def mmhm_markdown(mmhm_diff: pd.DataFrame, notes: list[str], run_name: str, other_name: str) -> list[str]:
    """The per-setting MMHM Δ section of comparison.md."""
    lines = ["## MMHM per setting", "",
             f"MMHM of each setting in both runs under one set of bounds; Δ = {run_name} − {other_name} with the "
             "95% CI of the paired bootstrap replicates; \"inside the noise\" means the CI contains 0.", "",
             *(f"- {n}" for n in notes), ""]
    if mmhm_diff.empty:
        return lines
    lines += [pd.DataFrame({
        "dataset": mmhm_diff.dataset, "model": mmhm_diff.model, "steps": mmhm_diff.steps,
        "cfg": mmhm_diff.cfg.map(fmt_cfg), run_name: mmhm_diff.mmhm.map(fmt), other_name: mmhm_diff.mmhm_other.map(fmt),
        "Δ": mmhm_diff.delta.map(fmt),
        "95% CI of Δ": [_ci_text(lo, hi) for lo, hi in zip(mmhm_diff.ci_low, mmhm_diff.ci_high, strict=True)],
        "verdict": mmhm_diff.verdict}).to_markdown(index=False), ""]
    return lines


def comparison_markdown(diff: pd.DataFrame, run_name: str, other_name: str, moves: pd.DataFrame | None = None,
                        mmhm_section: list[str] | None = None) -> str:
    lines = [f"# {run_name} vs {other_name}", "",
             f"Δ = {run_name} − {other_name}, with a 95% CI; \"inside the noise\" means the CI contains 0; "
             "better/worse follow each metric's direction; \"identical\" means equal to "
             f"{IDENTICAL_RTOL:g} relative (float noise between executors).", ""]
    if diff.empty:
        return "\n".join(lines + ["No metric rows in either run.", ""])
    shown = pd.DataFrame({
        "dataset": diff.dataset, "model": diff.model, "steps": diff.steps, "cfg": diff.cfg.map(fmt_cfg),
        "metric": diff.metric, run_name: diff.value.map(fmt), other_name: diff.value_other.map(fmt),
        "Δ": diff.delta.map(fmt),
        "95% CI of Δ": [_ci_text(lo, hi) for lo, hi in zip(diff.ci_low, diff.ci_high, strict=True)],
        "CI from": diff.ci_from, "verdict": diff.verdict})
    counts = diff.verdict.value_counts().to_dict()
    lines += [shown.to_markdown(index=False), "",
              "Summary: " + ", ".join(f"{v}: {c}" for v, c in sorted(counts.items())), ""]
    lines += mmhm_section or []
    if moves is not None and not moves.empty:
        lines += ["## MMHM selection per model", "",
                  f"Each run's MMHM argmax (its own bounds). A moved choice is \"inside the noise\" when, in "
                  f"{run_name}, the MMHM CIs of the new and the old setting overlap.", "",
                  pd.DataFrame({"dataset": moves.dataset, "model": moves.model, run_name: moves.chosen,
                                other_name: moves.chosen_other,
                                "MMHM (new choice)": [fmt_ci(*v) for v in zip(moves.mmhm, moves.mmhm_ci_low,
                                                                              moves.mmhm_ci_high, strict=True)],
                                "MMHM (old choice)": [fmt_ci(*v) for v in zip(moves.mmhm_of_other_choice,
                                                                              moves.other_ci_low,
                                                                              moves.other_ci_high, strict=True)],
                                "verdict": moves.verdict}).to_markdown(index=False), ""]
    return "\n".join(lines)
