"""``harness run --executor slurm``: submit the missing shards as arrays plus a dependent collect job.

Generation runs in array tasks (one per shard). Feature extraction, scoring and the report run in one
collect job that starts after every array ended (``afterany``) and refuses to generate: a shard that did not
finish (cancelled, failed) makes it fail with a message saying to run the same command again, which then
submits only what is missing. Without ``--wait`` the command returns right after submission.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .execution import DebugExecutor
from .protocol import Plan
from .runner import prepare_run, run_plan, say
from .sampling import generate_shard, shard_is_complete
from .slurm_executor import ACTIVE_STATES, SlurmExecutor, describe, query_states, read_jobs_log
from .slurm_profile import SlurmProfile


@dataclass(frozen=True)
class CollectTask:
    """Picklable descriptor of the collect step: extract, score and report a fully generated run."""

    plan: Plan
    run_dir: str
    cache_dir: str
    device: str = "cpu"


def collect_run(task: CollectTask) -> str:
    run_plan(task.plan, Path(task.run_dir), Path(task.cache_dir), DebugExecutor(), task.device, require_generated=True)
    return str(Path(task.run_dir) / "results.parquet")


@dataclass(frozen=True)
class Submission:
    submitted: int  # shards submitted now
    in_flight: int  # shards already queued or running from an earlier submission
    complete: int
    sbatch_calls: int
    job_ids: tuple[str, ...]  # array jobs and the collect job submitted now


def in_flight_jobs(run_dir: Path, items: list[str]) -> dict[str, str]:
    """item → job id, for the items whose latest generate job is still queued or running (one Slurm query)."""
    log = read_jobs_log(run_dir, "generate")
    known = {item: log[item]["job_id"] for item in items if item in log}
    states = query_states(list(known.values()))  # no cached answer: this decides what is submitted
    return {item: job for item, job in known.items() if states.get(job) in ACTIVE_STATES}


def submit_plan(plan: Plan, run_dir: Path, cache_dir: Path, profile: SlurmProfile, device: str = "cpu",
                wait: bool = False, executor: SlurmExecutor | None = None) -> Submission:
    cell_dirs = prepare_run(plan, run_dir, cache_dir)
    shards = plan.shards(cell_dirs, device)
    missing = [t for t in shards if not shard_is_complete(t)]
    busy = in_flight_jobs(run_dir, [describe(t) for t in missing])
    todo = [t for t in missing if describe(t) not in busy]
    ex = executor or SlurmExecutor(profile, run_dir)
    if not missing and (run_dir / "results.parquet").exists():
        say(f"generate: nothing to do, all {len(shards)} shards complete; results.parquet present")
        return Submission(0, 0, len(shards), 0, ())
    jobs = ex.submit(generate_shard, todo, "generate") if todo else []
    arrays = sorted({j.job_id.split("_")[0] for j in jobs})
    say(f"generate: {len(todo)} of {len(shards)} shards submitted as {len(arrays)} array job(s) "
        f"{', '.join(arrays) or '-'}; {len(busy)} already queued or running; "
        f"{len(shards) - len(missing)} complete")
    dependency = sorted(set(arrays) | {job.split("_")[0] for job in busy.values()})
    collect = ex.submit(collect_run, [CollectTask(plan, str(run_dir), str(cache_dir), device)], "collect",
                        dependency=dependency, time_min=profile.collect_time_min)
    say(f"collect: job {collect[0].job_id} extracts, scores and reports once the arrays end; "
        f"follow with `harness status {run_dir}`")
    if wait:
        # Everything submitted now is waited on; shards in flight from earlier are covered by the collect job.
        ex.wait(jobs + collect, [describe(t) for t in todo] + ["collect"], desc="slurm")
        say(f"report: {run_dir / 'results.parquet'}")
    return Submission(len(todo), len(busy), len(shards) - len(missing), ex.sbatch_calls,
                      tuple(arrays) + (collect[0].job_id,))


def slurm_states_for(run_dir: Path, items: list[str]) -> dict[str, str]:
    """State of the latest generate job of each item (one batched query, answers reused for a few seconds).
    Items never submitted map to "not submitted"; jobs Slurm no longer lists (a pending task cancelled, or
    forgotten after MinJobAge without accounting) to "not queued". Either way the next run resubmits them."""
    log = read_jobs_log(run_dir, "generate")
    known = {item: log[item]["job_id"] for item in items if item in log}
    states = query_states(list(known.values()), cache_file=run_dir / "slurm" / "states.json")
    return {item: states.get(known[item], "not queued") if item in known else "not submitted" for item in items}
