"""``harness status``: progress of a run directory, read from its files (Slurm asked only about what is not done)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from harness.errors import HarnessError
from harness.executors.slurm import describe
from harness.run.generate import shard_is_complete
from harness.run.slurm import slurm_states_for
from harness.store import manifest_path
from harness.types import ShardTask


def run_status(run_dir: Path) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """Per-cell progress from files: a shard is done iff its manifest exists and every PNG still matches it.

    Only when the run was submitted to Slurm (jobs.jsonl) and some shards are not done or results.parquet is not
    written yet is Slurm asked, in one batched, rate-limited query, about those shards' jobs and the latest
    extraction and collect jobs. Returns (cell rows, {stage: {Slurm state: jobs}} for extract / collect)."""
    path = run_dir / "run.json"
    if not path.exists():
        raise HarnessError(f"{path}: not a run directory (no run.json); start one with `harness run`")
    record = json.loads(path.read_text())
    out, not_done = [], {}
    for c in record["cells"]:
        size = c.get("shard_size", record["shard_size"])  # cells kept from an extended run keep their own
        tasks = [ShardTask(str(run_dir / c["dir"]), s, min(s + size, c["n"]), batch_size=1)
                 for s in range(0, c["n"], size)]
        paths = [manifest_path(Path(t.cell_dir), t.start, t.stop) for t in tasks]
        complete = [shard_is_complete(t) for t in tasks]
        corrupt = sum(p.exists() and not ok for p, ok in zip(paths, complete, strict=True))
        partial = sum(p.with_suffix(".journal").exists() for p in paths)
        not_done[c["cell_id"]] = [t for t, ok in zip(tasks, complete, strict=True) if not ok]
        out.append({**c, "shards_done": sum(complete), "shards_planned": len(tasks), "in_progress": partial,
                    "corrupt": corrupt})
    stages: dict[str, dict[str, int]] = {}
    if (run_dir / "jobs.jsonl").exists() and (any(not_done.values()) or not (run_dir / "results.parquet").exists()):
        states, stages = slurm_states_for(run_dir, [describe(t) for ts in not_done.values() for t in ts])
        for row in out:
            row["slurm"] = dict(Counter(states[describe(t)].lower() for t in not_done[row["cell_id"]]))
    return out, stages
