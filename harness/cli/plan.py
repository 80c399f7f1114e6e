"""``harness plan`` and ``harness validate``: the cells a protocol expands into, what is refused, what it costs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli.checks import protocol_path
from harness.plan.cost import estimate_plan_gpu_hours, plan_size_warnings
from harness.plan.protocol import load_protocol, make_plan


def cmd_plan(args: argparse.Namespace, print_table: bool) -> int:
    plan = make_plan(load_protocol(protocol_path(args.protocol), args.overrides))
    p = plan.protocol
    total_shards = sum(plan.shard_count(c) for c in plan.cells)
    total_nfe = 0
    lines = []
    adaptive = 0
    for c in plan.cells:
        facts = plan.facts_of(c)  # computed once by make_plan
        nfe = facts.nfe
        if nfe is None:
            adaptive += 1
        else:
            total_nfe += nfe * c.n
        cfg = "none" if c.settings.cfg is None else f"{c.settings.cfg:g}"
        knobs = "".join(f" {k}={v}" for k, v in c.settings.knobs)
        knobs += f" resize={c.resize[0]}px/{c.resize[1]}" if c.resize else ""
        cell_id = f"~{c.cell_id}" if c.provisional else f" {c.cell_id}"
        lines.append(f" {cell_id}  {c.model.name:<18} {c.dataset.id:<13} steps={c.settings.steps:<4} "
                     f"cfg={cfg:<5} guidance={facts.guidance:<8} sampler={c.settings.sampler:<6} n={c.n:<6} "
                     f"shards={plan.shard_count(c):<4} nfe/sample={'adaptive' if nfe is None else nfe}{knobs}")
    lines += _refused_lines(plan)
    if print_table:
        print(f"protocol {p.name} ({p.source})")
        for dataset_id, why in plan.missing_data.items():
            print(f"  provisional dataset {dataset_id}: files absent, cell ids marked ~ are placeholders "
                  f"(`harness run` refuses them): {why}")
        if p.reference_stats:
            absent = f"; absent (`harness run` refuses): {plan.missing_reference}" if plan.missing_reference else ""
            print(f"  reference statistics: {p.reference_stats.file} ({p.reference_stats.format}), not the "
                  f"datasets' images{absent}")
        print("\n".join(lines))
    unknown = f" (+ {adaptive} adaptive-solver cells, NFE known after sampling)" if adaptive else ""
    refused = f"; {len(plan.refused)} refused settings listed, not run" if plan.refused else ""
    provisional = f"; provisional ids (data absent: {', '.join(plan.missing_data)})" if plan.missing_data else ""
    print(f"{len(plan.cells)} cells, {total_shards} shards, {len(plan.cells) * p.n} samples, "
          f"{total_nfe} total NFE{unknown}; metrics: {', '.join(p.metrics) or 'none'}{refused}{provisional}")
    cost = _gpu_hours(plan, getattr(args, "calibrate", []))
    print(f"generation estimate: {cost}")
    if cost.assumption:
        print(f"generation estimate assumes: {cost.assumption}")
    for warning in plan_size_warnings(plan, Path("results") / p.name, cost.gpu_hours):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _gpu_hours(plan, calibrate: list[Path]):
    """GPU-hours from the cards' cost blocks, else calibrated from completed shards of earlier runs."""
    default = Path("results") / plan.protocol.name
    dirs = calibrate or ([default] if default.is_dir() and (default / "cells").is_dir() else [])
    return estimate_plan_gpu_hours(plan, dirs)


def _refused_lines(plan) -> list[str]:
    """Settings listed as refused (``unsupported: list``), one line per model, sampler and reason."""
    steps: dict[tuple[str, str, str, str], list[int]] = {}
    for r in plan.refused:
        cfg = "none" if r.settings.cfg is None else f"{r.settings.cfg:g}"
        steps.setdefault((r.model, cfg, r.settings.sampler, r.reason), []).append(r.settings.steps)
    return [f"  refused            {model:<18} steps={','.join(map(str, s))} cfg={cfg} sampler={sampler} "
            f"not run: {reason}" for (model, cfg, sampler, reason), s in steps.items()]
