"""``harness report RUN --compare OTHER``: paired differences RUN − OTHER per (dataset, model, steps, cfg,
metric), with a 95% CI, flagging differences whose CI contains 0 ("inside the noise").

CI of a difference: from bootstrap replicates when both cells have them with equal B (replicate b minus
replicate b, 2.5/97.5 percentiles); otherwise from the rows' own CIs combined in quadrature as normal
intervals (conservative when the two runs share seeds, which correlates their errors positively)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..composite import Bounds, load_replicates, percentile_ci
from ..errors import HarnessError
from .board import build_boards
from .results import Results
from .tables import fmt, fmt_cfg, fmt_ci

KEY = ["dataset", "model", "steps", "_cfg", "metric"]
Z95 = 1.959963984540054


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(_cfg=frame.cfg.fillna(-1.0))


def _difference_ci(run: Results, other: Results, a: pd.Series, b: pd.Series) -> tuple[float, float, str]:
    ra = load_replicates(run.run_dir_of[a.cell_id], a.cell_id, a.metric)
    rb = load_replicates(other.run_dir_of[b.cell_id], b.cell_id, b.metric)
    if ra is not None and rb is not None and ra.size == rb.size:
        lo, hi = percentile_ci(ra - rb)
        return lo, hi, "bootstrap"
    widths = [a.ci_high - a.ci_low, b.ci_high - b.ci_low]
    if all(np.isfinite(widths)):
        half = Z95 * float(np.hypot(*(w / (2 * Z95) for w in widths)))
        delta = a.value - b.value
        return delta - half, delta + half, "row CIs"
    return np.nan, np.nan, "none"


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
            row.update(delta=delta, ci_low=lo, ci_high=hi, ci_from=source)
            if delta == 0:
                row["verdict"] = "identical"
            elif source == "none":
                row["verdict"] = "no CI"
            elif lo <= 0 <= hi:
                row["verdict"] = "inside the noise"
            else:
                better = (delta > 0) == bool(r.higher_is_better)
                row["verdict"] = "better" if better else "worse"
        out.append(row)
    frame = pd.DataFrame(out)
    return frame.sort_values(["dataset", "metric", "model", "steps", "cfg"], na_position="first").reset_index(drop=True)


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


def comparison_markdown(diff: pd.DataFrame, run_name: str, other_name: str, moves: pd.DataFrame | None = None) -> str:
    lines = [f"# {run_name} vs {other_name}", "",
             f"Δ = {run_name} − {other_name}, with a 95% CI; \"inside the noise\" means the CI contains 0; "
             "better/worse follow each metric's direction.", ""]
    if diff.empty:
        return "\n".join(lines + ["No metric rows in either run.", ""])
    shown = pd.DataFrame({
        "dataset": diff.dataset, "model": diff.model, "steps": diff.steps, "cfg": diff.cfg.map(fmt_cfg),
        "metric": diff.metric, run_name: diff.value.map(fmt), other_name: diff.value_other.map(fmt),
        "Δ": diff.delta.map(fmt), "95% CI of Δ": [f"[{fmt(lo)}, {fmt(hi)}]" if np.isfinite(lo) else "–"
                                                  for lo, hi in zip(diff.ci_low, diff.ci_high, strict=True)],
        "CI from": diff.ci_from, "verdict": diff.verdict})
    counts = diff.verdict.value_counts().to_dict()
    lines += [shown.to_markdown(index=False), "",
              "Summary: " + ", ".join(f"{v}: {c}" for v, c in sorted(counts.items())), ""]
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
