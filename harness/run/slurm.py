"""``harness run --executor slurm``: generation arrays → extraction arrays → one small collect job.

* Generation: the missing shards, bundled into array tasks of about ``task_target_min`` minutes of estimated
  cost (harness.plan.cost; never over the time limit; unknown cost → one shard per task).
* Extraction: the (cell, extractor) pairs still lacking features, bundled up to ``extract_images_per_task``
  images per array task, ``afterany`` the generation arrays; reference statistics/features one task each,
  with no dependency (they need no generated image).
* Collect: scoring and the report, ``afterany`` everything above; it generates and extracts nothing, so a
  task that did not finish (cancelled, failed) makes it fail with a message saying to run the same command
  again, which then submits only what is missing (work still queued or running is not submitted twice).

Without ``--wait`` the command returns right after submission.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness.executors.slurm import ACTIVE_STATES, SlurmExecutor, describe, query_states, read_jobs_log
from harness.executors.slurm_profile import SlurmProfile, task_budget_s
from harness.features import get_extractor
from harness.metrics import get_metric
from harness.plan.cost import calibration, estimate_cell_seconds, model_key
from harness.plan.protocol import Plan
from harness.references.cache import reference_features_path, reference_path
from harness.run.extract import missing_extractors
from harness.run.generate import shard_is_complete
from harness.run.runner import prepare_run, say
from harness.run.slurm_tasks import (
    CellExtractTask,
    CollectTask,
    ExtractBundle,
    ReferenceTask,
    ShardBundle,
    bundle_indices,
    collect_run,
    compute_reference,
    extract_bundle,
    extraction_bundles,
    generate_bundle,
)
from harness.store import manifest_path, read_manifest
from harness.types import ShardTask


@dataclass(frozen=True)
class Submission:
    submitted: int  # shards submitted now
    in_flight: int  # shards already queued or running from an earlier submission
    complete: int
    sbatch_calls: int
    job_ids: tuple[str, ...]  # every job submitted now (generation, extraction, collect)
    generate_tasks: int = 0  # array tasks the submitted shards were bundled into
    extract_tasks: int = 0  # extraction + reference array tasks submitted now


def in_flight_jobs(run_dir: Path, items_by_stage: dict[str, list[str]]) -> dict[str, str]:
    """item → job id, for the items whose latest job of their stage is still queued or running (ONE query)."""
    known = {}
    for stage, items in items_by_stage.items():
        log = read_jobs_log(run_dir, stage)
        known.update({item: log[item]["job_id"] for item in items if item in log})
    states = query_states(list(known.values()))  # no cached answer: this decides what is submitted
    return {item: job for item, job in known.items() if states.get(job) in ACTIVE_STATES}


def shard_bundles(plan: Plan, shards: list[ShardTask], cell_dirs: dict[str, str], profile: SlurmProfile,
                  run_dir: Path) -> list[ShardBundle]:
    """Shards → array tasks sized by estimated cost (card ``cost`` block, else this run's completed shards)."""
    if not shards:
        return []
    cells = {cell_dirs[c.cell_id]: c for c in plan.cells}
    measured = calibration([run_dir])
    estimates = {d: estimate_cell_seconds(c, measured=measured, nfe=plan.facts_of(c).nfe) for d, c in cells.items()}
    costs = [estimates[t.cell_dir].samples_seconds(t.stop - t.start) for t in shards]
    budget = task_budget_s(profile)
    bundles = [ShardBundle(tuple(shards[i] for i in b))
               for b in bundle_indices(costs, [model_key(cells[t.cell_dir].model) for t in shards], budget)]
    known = [c for c in costs if c is not None]
    if known:
        over = [describe(t) for t, c in zip(shards, costs, strict=True) if c is not None and c > budget]
        say(f"generate: {len(known)} of {len(shards)} shards of known cost (~{sum(known) / 3600:.3g} GPU-hours) "
            f"bundled into tasks of <= {budget / 60:.0f} min estimated; {len(shards) - len(known)} of unknown "
            f"cost one per task" + (f"; {len(over)} shards alone exceed it (first {over[0]}): lower shard_size, "
                                    f"or they rely on the checkpoint requeue" if over else ""))
    return bundles


def extraction_tasks(plan: Plan, shards: list[ShardTask], complete: set[str], cell_dirs: dict[str, str],
                     cache_dir: Path, device: str) -> list[CellExtractTask | ReferenceTask]:
    """(cell, extractor) pairs with a shard not generated or not extracted yet, and missing references."""
    p = plan.protocol
    metrics = [get_metric(m) for m in p.metrics]
    extractors = tuple(sorted({m.extractor for m in metrics}))
    tasks: list[CellExtractTask | ReferenceTask] = []
    for cell in plan.cells:
        cell_dir = cell_dirs[cell.cell_id]
        own = [t for t in shards if t.cell_dir == cell_dir]
        needed: set[str] = set()
        for t in own:
            if describe(t) not in complete:
                needed = set(extractors)
                break
            digest = read_manifest(manifest_path(Path(cell_dir), t.start, t.stop)).content_digest
            needed |= set(missing_extractors(cache_dir, extractors, digest))
        ranges = tuple((t.start, t.stop) for t in own)
        tasks += [CellExtractTask(cell_dir, ranges, name, str(cache_dir), device) for name in sorted(needed)]
    seen = set()
    for m in metrics:
        for ds in p.datasets if m.needs_reference else ():
            locate = reference_path if m.reference_kind == "stats" else reference_features_path
            path = locate(cache_dir, ds, m.extractor, m.output, p.reference_n)
            if not path.exists() and path not in seen:
                seen.add(path)
                tasks.append(ReferenceTask(ds, m.extractor, m.output, p.reference_n, m.reference_kind,
                                           str(cache_dir), device))
    return tasks


def _arrays(jobs) -> list[str]:
    return sorted({j.job_id.split("_")[0] for j in jobs})


def submit_plan(plan: Plan, run_dir: Path, cache_dir: Path, profile: SlurmProfile, device: str = "cpu",
                wait: bool = False, executor: SlurmExecutor | None = None, extend: bool = False) -> Submission:
    cell_dirs = prepare_run(plan, run_dir, cache_dir, extend)  # run.json then names this plan: collect resumes it
    shards = plan.shards(cell_dirs, device)
    complete = {describe(t) for t in shards if shard_is_complete(t)}
    missing = [t for t in shards if describe(t) not in complete]
    extract = extraction_tasks(plan, shards, complete, cell_dirs, cache_dir, device)
    if not missing and not extract and (run_dir / "results.parquet").exists():
        say(f"generate: nothing to do, all {len(shards)} shards complete; results.parquet present")
        return Submission(0, 0, len(shards), 0, ())
    for name in {t.extractor for t in extract}:
        get_extractor(name)  # an unknown extractor fails here, not in a job
    busy = in_flight_jobs(run_dir, {"generate": [describe(t) for t in missing],
                                    "extract": [describe(t) for t in extract]})
    todo = [t for t in missing if describe(t) not in busy]
    # A queued extraction of a cell that gets a shard resubmitted now would run too early: submit it again.
    regenerating = {t.cell_dir for t in todo}
    extract_todo = [t for t in extract if describe(t) not in busy or getattr(t, "cell_dir", None) in regenerating]
    busy_arrays = sorted({job.split("_")[0] for job in busy.values()})
    ex = executor or SlurmExecutor(profile, run_dir)

    bundles = shard_bundles(plan, todo, cell_dirs, profile, run_dir)
    gen_jobs = ex.submit(generate_bundle, bundles, "generate") if bundles else []
    say(f"generate: {len(todo)} of {len(shards)} shards submitted as {len(_arrays(gen_jobs))} array job(s) "
        f"{', '.join(_arrays(gen_jobs)) or '-'} ({len(bundles)} tasks); "
        f"{len(missing) - len(todo)} already queued or running; {len(complete)} complete")
    cells = [t for t in extract_todo if isinstance(t, CellExtractTask)]
    refs = [t for t in extract_todo if isinstance(t, ReferenceTask)]
    after_generation = sorted(set(_arrays(gen_jobs)) | set(busy_arrays))
    ext_bundles: list[ExtractBundle] = extraction_bundles(cells, profile.extract_images_per_task)
    ext_time = profile.extract_time_min
    ext_jobs = ex.submit(extract_bundle, ext_bundles, "extract", dependency=after_generation,
                         time_min=ext_time) if cells else []
    ref_jobs = ex.submit(compute_reference, refs, "extract", time_min=ext_time) if refs else []
    say(f"extract: {len(cells)} (cell, extractor) pairs in {len(ext_bundles)} tasks after the generation arrays, "
        f"{len(refs)} reference tasks; {len(extract) - len(extract_todo)} already queued or running")
    dependency = sorted(set(after_generation) | set(_arrays(ext_jobs + ref_jobs)))
    collect = ex.submit(collect_run, [CollectTask(plan, str(run_dir), str(cache_dir), device)], "collect",
                        dependency=dependency, time_min=profile.collect_time_min)
    say(f"collect: job {collect[0].job_id} scores and reports once the arrays end; "
        f"follow with `harness status {run_dir}`")
    if wait:
        # Everything submitted now is waited on; work in flight from earlier is covered by the collect job.
        jobs = gen_jobs + ext_jobs + ref_jobs + collect
        names = [describe(t) for t in bundles + ext_bundles + refs] + ["collect"]
        ex.wait(jobs, names, desc="slurm")
        say(f"report: {run_dir / 'results.parquet'}")
    submitted = _arrays(gen_jobs + ext_jobs + ref_jobs) + [collect[0].job_id]
    return Submission(len(todo), len(missing) - len(todo), len(complete), ex.sbatch_calls, tuple(submitted),
                      len(bundles), len(ext_bundles) + len(refs))


def slurm_states_for(run_dir: Path, items: list[str]) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """One batched query (answers reused for a few seconds): the state of the latest generate job of each item,
    and, per later stage ("extract", "collect"), how many of its items' latest jobs are in each state.

    Items never submitted map to "not submitted"; jobs Slurm no longer lists (a pending task cancelled, or
    forgotten after MinJobAge without accounting) to "not queued". Either way the next run resubmits them."""
    log = read_jobs_log(run_dir, "generate")
    known = {item: log[item]["job_id"] for item in items if item in log}
    later = {stage: read_jobs_log(run_dir, stage) for stage in ("extract", "collect")}
    later_ids = [rec["job_id"] for stage_log in later.values() for rec in stage_log.values()]
    states = query_states(list(known.values()) + later_ids, cache_file=run_dir / "slurm" / "states.json")
    per_item = {item: states.get(known[item], "not queued") if item in known else "not submitted" for item in items}
    per_stage = {stage: dict(Counter(states.get(rec["job_id"], "not queued").lower() for rec in stage_log.values()))
                 for stage, stage_log in later.items() if stage_log}
    return per_item, per_stage
