"""What Slurm says about a run's jobs, for ``harness status`` (submission itself: harness/executors/slurm.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from harness.executors.slurm import query_states, read_jobs_log


def slurm_states_for(run_dir: Path, items: list[str]) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """One batched query (answers reused for a few seconds): the state of the latest generate job of each item,
    and, per later stage ("reference", "extract", "collect"), how many of its items' latest jobs are in each state.

    Items never submitted map to "not submitted"; jobs Slurm no longer lists (a pending task cancelled, or
    forgotten after MinJobAge without accounting) to "not queued". Either way the next run resubmits them."""
    log = read_jobs_log(run_dir, "generate")
    known = {item: log[item]["job_id"] for item in items if item in log}
    later = {stage: read_jobs_log(run_dir, stage) for stage in ("reference", "extract", "collect")}
    later_ids = [rec["job_id"] for stage_log in later.values() for rec in stage_log.values()]
    states = query_states(list(known.values()) + later_ids, cache_file=run_dir / "slurm" / "states.json")
    per_item = {item: states.get(known[item], "not queued") if item in known else "not submitted" for item in items}
    per_stage = {stage: dict(Counter(states.get(rec["job_id"], "not queued").lower() for rec in stage_log.values()))
                 for stage, stage_log in later.items() if stage_log}
    return per_item, per_stage
