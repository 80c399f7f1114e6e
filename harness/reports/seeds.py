"""Seed replicates: the spread of each setting's metric across generation seeds, beside its bootstrap interval.

A bootstrap interval resamples the *images* of one cell; it says nothing about drawing a fresh set of noise.
With ``seeds: [S1, S2, ...]`` every setting runs once per seed, and this table shows, per (dataset, model,
steps, cfg, metric): the mean over seeds, the between-seed standard deviation, the range, and the typical
bootstrap half-width, so a reader sees whether a gap between two settings survives resampling the generator's
noise (the "FID lottery": gaps of 1-2 % are often inside it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.reports.results import seed_of
from harness.reports.tables import fmt, fmt_cfg, fmt_interval

KEYS = ["dataset", "model", "steps", "cfg", "metric", "variant"]


def seed_spread(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per setting × metric that was run under two or more seeds (empty when none was)."""
    if frame.empty:
        return pd.DataFrame()
    rows = frame.assign(seed=[seed_of(p) for p in frame.seed_policy], _cfg=frame.cfg.fillna(-1.0))
    keys = [k if k != "cfg" else "_cfg" for k in KEYS]
    out = []
    for key, part in rows.groupby(keys, sort=True, dropna=False):
        part = part.drop_duplicates("seed", keep="last")
        if len(part) < 2:
            continue
        values = part.value.astype(float).to_numpy()
        half = ((part.ci_high - part.ci_low).astype(float) / 2).to_numpy()
        out.append({**dict(zip(KEYS, key, strict=True)), "cfg": part.cfg.iloc[0], "seeds": len(part),
                    "seed_list": ",".join(sorted(part.seed, key=lambda s: (len(s), s))),
                    "mean": float(values.mean()), "between_seed_sd": float(values.std(ddof=1)),
                    "min": float(values.min()), "max": float(values.max()),
                    "bootstrap_half_width": float(np.nanmean(half)) if np.isfinite(half).any() else np.nan,
                    "higher_is_better": bool(part.higher_is_better.iloc[0])})
    return pd.DataFrame(out)


def seeds_markdown(spread: pd.DataFrame) -> str:
    """The "Seed replicates" section of leaderboard.md ("" when no setting has replicates)."""
    if spread.empty:
        return ""
    lines = ["## Seed replicates", "",
             "Each setting run under several generation seeds: the mean, the standard deviation between seeds and "
             "the range over the seeds, and the mean half-width of the per-seed bootstrap 95% intervals (which "
             "resample images, not noise). "
             "A between-seed SD near or above the half-width means the noise of the draw matters as much as the "
             "sample size: compare settings by their seed means.", ""]
    for dataset, part in spread.groupby("dataset", sort=True):
        lines += [f"### {dataset}", "", "| model | steps | cfg | metric | seeds | mean | SD between seeds | range | "
                  "bootstrap half-width |", "|---|---|---|---|---|---|---|---|---|"]
        for r in part.sort_values(["metric", "model", "steps"]).itertuples():
            lines.append(f"| {r.model} | {r.steps} | {fmt_cfg(r.cfg)} | {r.metric} | {r.seeds} ({r.seed_list}) | "
                         f"{fmt(r.mean)} | {fmt(r.between_seed_sd)} | {fmt_interval(r.min, r.max)} | "
                         f"{fmt(r.bootstrap_half_width)} |")
        lines.append("")
    return "\n".join(lines)
