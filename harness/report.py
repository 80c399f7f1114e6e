"""Results → tidy parquet, a Markdown leaderboard and a steps plot. Every report is a pandas view."""

from __future__ import annotations

import io
import json
from dataclasses import asdict, fields
from pathlib import Path

import pandas as pd

from .errors import HarnessError
from .store import atomic_write_bytes
from .types import MetricRow

COLUMNS = [f.name for f in fields(MetricRow)]


def rows_to_frame(rows: list[MetricRow]) -> pd.DataFrame:
    frame = pd.DataFrame([asdict(r) for r in rows], columns=COLUMNS)
    return frame.astype({"cfg": "float64", "ci_low": "float64", "ci_high": "float64"})


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def read_results(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "results.parquet"
    if not path.exists():
        raise HarnessError(f"{path}: no results yet; run `harness run PROTOCOL --results {run_dir}` first")
    return pd.read_parquet(path)


def _fmt(value: float, low: float, high: float) -> str:
    if pd.isna(low) or pd.isna(high):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def leaderboard_markdown(frame: pd.DataFrame, description: str = "") -> str:
    """One table per dataset: a row per (model, steps, cfg), a column per metric (value [95% CI])."""
    head = ["# Leaderboard", ""] + ([f"> {description}", ""] if description else [])
    if frame.empty:
        return "\n".join(head + ["No metric rows (the protocol lists no metrics).", ""])
    out = head
    for dataset, part in frame.groupby("dataset", sort=True):
        part = part.assign(cell=[_fmt(v, lo, hi) for v, lo, hi in zip(part.value, part.ci_low, part.ci_high)],
                           cfg=part.cfg.map(lambda c: "none" if pd.isna(c) else f"{c:g}"))
        table = part.pivot_table(index=["model", "steps", "cfg", "nfe_mean", "sec_per_image", "n"],
                                 columns="metric", values="cell", aggfunc="first").reset_index()
        table.columns.name = None
        arrows = {m: ("↑" if hib else "↓") for m, hib in part.groupby("metric").higher_is_better.first().items()}
        table = table.rename(columns={m: f"{m} {a}" for m, a in arrows.items()})
        table = table.rename(columns={"nfe_mean": "NFE", "sec_per_image": "s/img"})
        out += [f"## {dataset}", "", table.to_markdown(index=False, floatfmt=".4g"), ""]
        variants = part.groupby("metric")[["variant", "extractor_id", "reference_id"]].first()
        out += ["Variants: " + "; ".join(f"`{m}` = {r.variant} (extractor {r.extractor_id}"
                                          + (f", reference {r.reference_id})" if r.reference_id else ")")
                                          for m, r in variants.iterrows()), ""]
        small = part[(part.metric == "fid") & (part.n < 2048)]
        if not small.empty:
            out += [f"FID here uses n = {small.n.min()} samples per cell (< 2048): it is biased upward and its "
                    f"covariance is rank-deficient; compare FIDs only at equal n.", ""]
    return "\n".join(out)


def plot_metric_vs_steps(frame: pd.DataFrame, metric: str, path: Path) -> None:
    """Metric vs steps: one panel per model, one line per cfg (shaded CI where present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = frame[frame.metric == metric]
    models = sorted(part.model.unique())
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models, strict=True):
        sub = part[part.model == model]
        for cfg, line in sub.groupby(sub.cfg.fillna(-1.0), sort=True):
            line = line.sort_values("steps")
            label = "no guidance" if cfg < 0 else f"cfg {cfg:g}"
            ax.plot(line.steps, line.value, marker="o", label=label)
            if line.ci_low.notna().all():
                ax.fill_between(line.steps, line.ci_low, line.ci_high, alpha=0.2)
        ax.set_xscale("log", base=2)
        ax.set_title(model)
        ax.set_xlabel("steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    arrow = "higher is better" if part.higher_is_better.iloc[0] else "lower is better"
    axes[0][0].set_ylabel(f"{metric} ({arrow})")
    fig.suptitle(f"{metric} vs steps — {part.dataset.iloc[0]}, n={part.n.iloc[0]}/cell", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_report(run_dir: Path, frame: pd.DataFrame) -> list[Path]:
    """leaderboard.md and plots/<metric>_vs_steps.png from the tidy frame; returns the paths written."""
    written = [run_dir / "leaderboard.md"]
    record = run_dir / "run.json"
    description = json.loads(record.read_text())["protocol"].get("description", "") if record.exists() else ""
    atomic_write_bytes(written[0], leaderboard_markdown(frame, description).encode())
    for (metric, dataset), _ in frame.groupby(["metric", "dataset"]):
        path = run_dir / "plots" / f"{metric}_vs_steps_{dataset}.png"
        plot_metric_vs_steps(frame[(frame.metric == metric) & (frame.dataset == dataset)], metric, path)
        written.append(path)
    return written
