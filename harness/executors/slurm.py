"""The Slurm executor on submitit: each stage's tasks packed into job arrays chained by dependencies.

* ``run_stages`` submits every stage at once: its tasks packed by estimated cost into array tasks
  (:func:`bundle_indices`: ``Stage.weights`` in seconds up to the profile's task budget, or in images up to
  ``extract_images_per_task``), each array ``afterany`` the arrays of the stages it comes after. Tasks
  whose latest job is still queued or running are not submitted twice. Without ``wait`` it returns at once.
* One array task per task descriptor or bundle of them; descriptors are tiny frozen dataclasses.
* Arrays are split into ``map_array`` calls of at most ``MaxArraySize - 1`` tasks, each indexed from 0
  (Slurm caps the *index*, and submitit does not split), all submitted at once.
* Every task runs inside :class:`RequeueableTask`, a submitit ``Checkpointable``: on preemption or a time
  limit submitit requeues the very same call, and the idempotent task resumes from its journal.
* ``<run_dir>/jobs.jsonl`` maps (array job, task) → work item (each shard of a bundle) as jobs are
  submitted, so status and resubmission never need the launching process.
* Slurm is asked about job states only for work with no result on disk, in one batched, rate-limited call.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import submitit

from harness.errors import HarnessError
from harness.executors import ExecutorOptions, register_executor
from harness.executors.base import Executor, Stage, _progress, describe, work_items
from harness.executors.slurm_profile import SlurmProfile, task_budget_s

# Job states in which a task may still produce its result.
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
                           "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "PREEMPTED"})


def array_chunks(n_tasks: int, max_array_size: int) -> list[range]:
    """Split ``n_tasks`` into consecutive chunks of at most ``max_array_size - 1`` tasks.

    Each chunk becomes one array indexed from 0, so no index reaches ``max_array_size``."""
    if max_array_size < 2:
        raise HarnessError(f"MaxArraySize {max_array_size}: must be at least 2 to submit any array")
    size = max_array_size - 1
    return [range(a, min(a + size, n_tasks)) for a in range(0, n_tasks, size)]


class RequeueableTask(submitit.helpers.Checkpointable):
    """Runs ``fn(task)``; on a time limit or preemption submitit requeues this same call.

    The default ``checkpoint`` (resubmit self with the same arguments) is all that is needed: the task
    functions are idempotent and keep their own progress on disk (shard journals, content-addressed caches)."""

    def __call__(self, fn: Callable[[Any], Any], task: Any) -> Any:
        return fn(task)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def append_jobs_log(run_dir: Path, records: list[dict]) -> None:
    """One JSON line per submitted task, written with a single O_APPEND write (concurrent launchers are safe)."""
    if not records:
        return
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
    fd = os.open(run_dir / "jobs.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_jobs_log(run_dir: Path, stage: str) -> dict[str, dict]:
    """The latest submission of each work item of ``stage`` (later lines win)."""
    path = run_dir / "jobs.jsonl"
    latest: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                if rec["stage"] == stage:
                    latest[rec["item"]] = rec
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill mid-write: that submission is simply not known
    return latest


def _expand_job_id(job_id: str) -> list[str]:
    """Array tasks not yet started are listed together: "12_[3-5,8%2]" → 12_3, 12_4, 12_5, 12_8."""
    if "_[" not in job_id:
        return [job_id]
    array, spec = job_id.split("_[", 1)
    ids = []
    for part in spec.rstrip("]").split("%")[0].split(","):
        a, _, b = part.partition("-")
        ids += [f"{array}_{i}" for i in range(int(a), int(b or a) + 1)]
    return ids


def _parse_states(text: str) -> dict[str, str]:
    states = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or parts[0] in ("JobID", "") or "." in parts[0]:
            continue  # header, blank, or a job step (123.batch)
        for job_id in _expand_job_id(parts[0]):
            states[job_id] = parts[1].split()[0].upper()  # "CANCELLED by 0" → CANCELLED
    return states


def query_states(job_ids: Sequence[str], cache_file: Path | None = None, min_interval_s: float | None = None
                 ) -> dict[str, str]:
    """States of ``job_ids`` ("123_4" or "123") in ONE call: sacct if it answers, else squeue.

    With ``cache_file``, an answer younger than ``min_interval_s`` (env HARNESS_SLURM_MIN_QUERY_S, default 15)
    that covers the same ids is reused instead of asking again. Ids Slurm no longer knows are absent."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    if min_interval_s is None:
        min_interval_s = float(os.environ.get("HARNESS_SLURM_MIN_QUERY_S", "15"))
    if cache_file is not None and cache_file.exists():
        try:
            saved = json.loads(cache_file.read_text())
            if time.time() - saved["at"] < min_interval_s and set(ids) <= set(saved["asked"]):
                return {i: s for i, s in saved["states"].items() if i in ids}
        except (ValueError, KeyError, TypeError):
            pass
    arrays = sorted({i.split("_")[0] for i in ids})
    states: dict[str, str] = {}
    if shutil.which("sacct"):
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(arrays)],
                             capture_output=True, text=True, timeout=60)
        if out.returncode == 0:
            states = _parse_states(out.stdout)
    if not states and shutil.which("squeue"):
        out = subprocess.run(["squeue", "-r", "-h", "--states=all", "-o", "%i|%T", "-j", ",".join(arrays)],
                             capture_output=True, text=True, timeout=60)
        states = _parse_states(out.stdout)
    answer = {i: states[i] for i in ids if i in states}
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps({"at": time.time(), "asked": ids, "states": answer}))
    return answer


def bundle_indices(costs: Sequence[float | None], groups: Sequence[str], budget: float) -> list[list[int]]:
    """Pack consecutive work items into bundles of estimated ``budget`` at most (seconds, images, ...).

    ``costs[i]``: estimated cost of item i (None: unknown → a bundle of its own); ``groups[i]``: items of
    different groups (models, extractors) never share a bundle. An item costlier than the budget alone is a
    bundle of its own. Deterministic; every item lands in exactly one bundle, in order."""
    if len(costs) != len(groups):
        raise ValueError(f"{len(costs)} costs for {len(groups)} groups")
    if budget <= 0:
        raise HarnessError(f"task budget {budget}: must be positive (time_min × 60 > signal_delay_s)")
    bundles: list[list[int]] = []
    current: list[int] = []
    total = 0.0
    for i, (cost, group) in enumerate(zip(costs, groups, strict=True)):
        if current and (cost is None or group != groups[current[0]] or total + cost > budget):
            bundles.append(current)
            current, total = [], 0.0
        if cost is None:
            bundles.append([i])
            continue
        current.append(i)
        total += cost
    if current:
        bundles.append(current)
    return bundles


@dataclass(frozen=True)
class Bundle:
    """Several tasks of one stage run one after another in one array task (each resumable on its own)."""

    fn: Callable[[Any], Any]
    parts: tuple[Any, ...]

    def __call__(self) -> list[Any]:
        """Every part, even after one failed (the others' work is kept); then one error naming the failures."""
        results, failures = [], []
        for part in self.parts:
            try:
                results.append(self.fn(part))
            except HarnessError as e:
                failures.append(f"{describe(part)}: {e}")
        if failures:
            raise HarnessError(f"{len(failures)} of {len(self.parts)} tasks failed: " + " | ".join(failures))
        return results


def run_bundle(bundle: Bundle) -> list[Any]:
    return bundle()


def pack_stage(stage: Stage, todo: Sequence[int], profile: SlurmProfile) -> list[Any]:
    """The array tasks of a stage's tasks ``todo``: one per task when the stage gives no weights, else
    :class:`Bundle` s of consecutive tasks of one group up to the budget (``weight_unit`` "seconds": the
    profile's task budget; "images": ``extract_images_per_task``)."""
    if stage.serial:  # one job, one task after another: timings see no other task of the stage
        return [Bundle(stage.fn, tuple(stage.tasks[i] for i in todo))]
    if stage.weights is None:
        return [stage.tasks[i] for i in todo]
    budget = task_budget_s(profile) if stage.weight_unit == "seconds" else profile.extract_images_per_task
    groups = stage.groups or ("",) * len(stage.tasks)
    packed = bundle_indices([stage.weights[i] for i in todo], [groups[i] for i in todo], budget)
    return [Bundle(stage.fn, tuple(stage.tasks[todo[i]] for i in b)) for b in packed]


def _cost_line(stage: Stage, todo: Sequence[int], profile: SlurmProfile) -> str | None:
    known = [stage.weights[i] for i in todo if stage.weights[i] is not None] if stage.weights else []
    if not known or stage.weight_unit != "seconds":
        return None
    return (f"{stage.name}: {len(known)} of {len(todo)} tasks of known cost (~{sum(known) / 3600:.3g} GPU-hours) "
            f"packed into array tasks of <= {task_budget_s(profile) / 60:.0f} min estimated; "
            f"{len(todo) - len(known)} of unknown cost one per array task")


def in_flight_jobs(run_dir: Path, items_by_stage: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    """stage → item → job id, for items whose latest job of their stage is still queued or running (ONE query)."""
    known: dict[str, dict[str, str]] = {}
    for stage, items in items_by_stage.items():
        log = read_jobs_log(run_dir, stage)
        known[stage] = {item: log[item]["job_id"] for item in items if item in log}
    states = query_states([j for jobs in known.values() for j in jobs.values()])  # no cache: this decides
    return {stage: {item: job for item, job in jobs.items() if states.get(job) in ACTIVE_STATES}
            for stage, jobs in known.items()}


def _arrays(job_ids: Sequence[str]) -> list[str]:
    return sorted({j.split("_")[0] for j in job_ids})


@register_executor("slurm")
class SlurmExecutor(Executor):
    """``run_stages`` = submit every stage as dependent arrays; ``map`` = submit one array and wait."""

    name = "slurm"

    def __init__(self, profile: SlurmProfile, run_dir: Path, poll_s: float = 2.0, wait: bool = False) -> None:
        self.profile = profile
        self.run_dir = Path(run_dir)
        self.poll_s = poll_s
        self.wait_for_stages = wait
        self.returns_at_submission = not wait
        self.sbatch_calls = 0
        self.submitted: dict[str, list[str]] = {}  # stage → job ids submitted by the last run_stages
        try:
            self._ex = submitit.SlurmExecutor(folder=self.run_dir / "slurm" / "%j",
                                              max_num_timeout=profile.max_num_timeout)
        except RuntimeError as e:  # submitit's "Could not detect srun": not a Slurm machine
            raise HarnessError(f"--executor slurm (profile {profile.source}): {e}; run it on a Slurm login node, "
                               "or use --executor local") from None
        try:
            self._ex.update_parameters(**profile.submitit_parameters())
        except ValueError as e:
            raise HarnessError(f"{profile.source}: submitit rejects the profile: {str(e).splitlines()[0]}") from None

    def submit(self, fn: Callable[[Any], Any], tasks: Sequence[Any], stage: str,
               dependency: Sequence[str] = (), time_min: int | None = None) -> list[submitit.Job]:
        """Submit one array task per task descriptor; returns at once. Records every task in jobs.jsonl.

        ``dependency``: job ids that must end first (``afterany``); ``time_min`` overrides the profile's."""
        jobs: list[submitit.Job] = []
        wrapper = RequeueableTask()
        extra = {"dependency": "afterany:" + ":".join(dependency)} if dependency else {}
        self._ex.update_parameters(additional_parameters={**self.profile.extra_sbatch, **extra},
                                   time=time_min or self.profile.time_min)
        for chunk in array_chunks(len(tasks), self.profile.max_array_size):
            batch = [tasks[i] for i in chunk]
            try:
                chunk_jobs = self._ex.map_array(wrapper, [fn] * len(batch), batch)
            except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError, OSError) as e:
                # submitit reports a failing sbatch as FailedJobError(sbatch's stderr): keep its last line
                said = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
                raise HarnessError(f"sbatch failed for {stage} ({len(batch)} tasks, profile "
                                   f"{self.profile.source}): {said[-1] if said else type(e).__name__}; "
                                   "run the same command again to submit what is missing") from None
            self.sbatch_calls += 1
            append_jobs_log(self.run_dir, [
                {"job_id": job.job_id, "array_job": job.job_id.split("_")[0], "task": index, "stage": stage,
                 "item": item, "submitted_at": _now()}
                for index, (job, task) in enumerate(zip(chunk_jobs, batch, strict=True))
                for item in work_items(task)])  # a bundle: one line per shard, all with the bundle's job
            jobs += chunk_jobs
        return jobs

    def wait(self, jobs: Sequence[submitit.Job], items: Sequence[str], desc: str) -> list[Any]:
        """Block until every job ended; results in order. Failures are reported together, after all ended
        (the others are already paid for), as one error naming each failed item and its job."""
        pending = set(range(len(jobs)))
        with _progress(len(jobs), desc) as bar:
            while pending:
                finished = {i for i in pending if jobs[i].done()}  # result file first; sacct batched, throttled
                pending -= finished
                bar.update(len(finished))
                if pending:
                    time.sleep(self.poll_s)
        results, failures = [], []
        for job, item in zip(jobs, items, strict=True):
            try:
                results.append(job.result())
            except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as e:
                lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
                failures.append(f"{item} (job {job.job_id}): {lines[-1] if lines else type(e).__name__}")
                results.append(None)
        if failures:
            more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
            raise HarnessError(f"{len(failures)} of {len(jobs)} {desc} tasks failed: " + "; ".join(failures[:3])
                               + more + "; run the same `harness run` again to resubmit them")
        return results

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], desc: str) -> list[Any]:
        if not tasks:
            return []
        jobs = self.submit(fn, tasks, desc)
        return self.wait(jobs, [describe(t) for t in tasks], desc)

    @classmethod
    def from_options(cls, options: ExecutorOptions) -> SlurmExecutor:
        if options.profile is None:
            raise HarnessError("--executor slurm needs --profile FILE (see slurm/profiles/, e.g. --profile ci)")
        if options.run_dir is None:
            raise HarnessError("the Slurm executor needs the run directory its jobs log and job folders go to")
        return cls(options.profile, options.run_dir, wait=options.wait)

    def run_stages(self, stages: Sequence[Stage]) -> dict[str, list[Any]]:
        """Submit every stage now, each ``afterany`` the arrays (new or still in flight) of the stages it names.

        A task whose latest job is queued or running is not submitted again, unless something it depends on is
        submitted now: its ``needs`` item (an extraction's shard), or, for tasks without one, anything of the
        stages it comes after. An inline stage (collect) is submitted every time, after everything in flight.
        Returns at once, or with ``wait`` when every job submitted now ended."""
        busy = in_flight_jobs(self.run_dir, {s.name: [describe(t) for t in s.tasks] for s in stages})
        arrays: dict[str, list[str]] = {}  # stage → its arrays a later stage waits for
        fresh: dict[str, set[str]] = {}  # stage → items submitted now
        waiting: list[tuple[Any, str]] = []
        self.submitted = {}
        for stage in stages:
            in_flight = busy.get(stage.name, {})
            upstream_new = set().union(*(fresh.get(a, set()) for a in stage.after)) if stage.after else set()

            def again(task: Any, upstream_new: set = upstream_new) -> bool:
                needs = getattr(task, "needs", None)
                return needs in upstream_new if needs is not None else bool(upstream_new)

            # an inline stage (collect) is cheap and must see this submission's arrays: always submitted anew
            todo = [i for i, t in enumerate(stage.tasks)
                    if stage.inline or describe(t) not in in_flight or again(t)]
            packed = pack_stage(stage, todo, self.profile) if todo else []
            if todo and _cost_line(stage, todo, self.profile):
                print(_cost_line(stage, todo, self.profile), flush=True)
            dependency = sorted({a for name in stage.after for a in arrays.get(name, [])})
            # the profile's limit for this stage (reference chunks are extraction work), else time_min
            time_min = getattr(self.profile, f"{'extract' if stage.name == 'reference' else stage.name}_time_min",
                               None)
            bundled = stage.weights is not None or stage.serial
            jobs = (self.submit(run_bundle if bundled else stage.fn, packed, stage.name,
                                dependency=dependency, time_min=time_min) if packed else [])
            fresh[stage.name] = {describe(stage.tasks[i]) for i in todo}
            self.submitted[stage.name] = [j.job_id for j in jobs]
            arrays[stage.name] = sorted(set(_arrays([j.job_id for j in jobs])) | set(_arrays(list(in_flight.values()))))
            waiting += [(job, describe(task)) for job, task in zip(jobs, packed, strict=True)]
            new_arrays = _arrays([j.job_id for j in jobs])
            print(f"{stage.name}: {len(todo)} of {len(stage.tasks) + stage.done} {stage.noun} submitted as "
                  f"{len(new_arrays)} array job(s) {', '.join(new_arrays) or '-'} "
                  f"({len(packed)} tasks); {len(stage.tasks) - len(todo)} already queued or running"
                  + (f"; {stage.done} complete" if stage.done else ""), flush=True)
        if not self.wait_for_stages:
            print(f"submitted: the collect job scores and reports once the arrays end; follow with "
                  f"`harness status {self.run_dir}`", flush=True)
            return {}
        done = self.wait([j for j, _ in waiting], [name for _, name in waiting], desc="slurm")
        return {"all": done}
