"""``harness run``: plan → stages (generate, reference, extract, collect) → any executor; each skips what is done."""

from __future__ import annotations

from pathlib import Path

from harness.executors.base import Executor
from harness.models.cards import require_pinned
from harness.plan.protocol import Plan
from harness.run.record import claim_run_dir, write_run_record
from harness.run.stages import build_stages, say
from harness.store import ensure_writable, write_cell

__all__ = ["prepare_run", "run_plan", "say"]


def prepare_run(plan: Plan, run_dir: Path, cache_dir: Path, extend: bool = False) -> dict[str, str]:
    """Check both directories are writable and ``run_dir`` holds no other plan's run (``extend``: add to it on
    purpose), write cell specs and run.json; returns cell id → cell dir."""
    plan.require_data()  # provisional cell ids (a dataset's files absent): refused before anything is written
    for cell in plan.cells:
        require_pinned(cell.model)  # before anything is written or spent
    kept = claim_run_dir(plan, run_dir, extend)
    ensure_writable(run_dir)
    ensure_writable(cache_dir, "cache directory", "--cache DIR (or $HARNESS_CACHE)")
    cell_dirs = {c.cell_id: str(write_cell(run_dir, c)) for c in plan.cells}
    write_run_record(run_dir, plan, cell_dirs, kept)
    return cell_dirs


def run_plan(plan: Plan, run_dir: Path, cache_dir: Path, executor: Executor, device: str = "cpu",
             extend: bool = False) -> Path:
    """Run what is missing of ``plan`` into ``run_dir`` on ``executor``. ``extend``: use a results directory
    holding another protocol's run, keeping its cells and rows (else it is refused). An executor that returns
    at submission (Slurm without --wait) leaves the collect stage to its own job."""
    cell_dirs = prepare_run(plan, run_dir, cache_dir, extend)
    if plan.protocol.reference_stats:
        plan.protocol.reference_stats.load()  # a damaged imported reference: refused before any compute
    stages = build_stages(plan, run_dir, cache_dir, cell_dirs, device)
    idle = not any(s.tasks for s in stages if s.name != "collect")
    if idle and executor.returns_at_submission and (run_dir / "results.parquet").exists():
        say("nothing to do: every shard, feature and reference is done and results.parquet is present")
        return run_dir
    executor.run_stages(stages)
    return run_dir
