"""``harness report``: leaderboards, plots and comparisons from one or more finished runs."""

from __future__ import annotations

import argparse

from harness.errors import HarnessError
from harness.reports import load_runs, write_comparison, write_results_report
from harness.reports.mmhm import load_bounds
from harness.store import ensure_writable


def cmd_report(args: argparse.Namespace) -> int:
    runs = [*args.runs, *args.results]
    if not runs:
        raise HarnessError("report: name at least one run directory (harness report RUN [RUN ...])")
    if len(runs) > 1 and args.out is None:
        raise HarnessError(f"report: merging {len(runs)} runs needs --out DIR (not written into any one of them)")
    out = args.out or runs[0]
    metrics = [m.strip() for m in args.mmhm_metrics.split(",") if m.strip()] if args.mmhm_metrics else None
    bounds = load_bounds(args.bounds) if args.bounds else None
    results = load_runs(runs)
    other = load_runs([args.compare]) if args.compare else None
    ensure_writable(out, "report directory", "--out DIR")  # before anything is written
    ensure_writable(out / "plots", "report plots directory", "--out DIR")
    written = write_results_report(results, out, metrics, bounds, args.mmhm_best)
    if other is not None:
        written += write_comparison(results, other, out, metrics, bounds)
    shown = [str(w.relative_to(out)) for w in written if w.parent == out]
    print(f"wrote {len(written)} files under {out}: {', '.join(shown)} and plots/")
    return 0
