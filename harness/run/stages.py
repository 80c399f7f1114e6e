"""The stages of a run, built once from the plan and handed to whichever executor runs them.

    generate  (ShardTask: one shard of one cell)                       ─┐
    reference (ReferenceChunkTask: reference feature rows of 128 images)  │
    extract   (ExtractTask: one shard's features), after generate       ├─► collect (CollectTask: score, report)
    cost      (CostGroupTask: latency/memory/FLOPs of cells measured    ─┘
               together; the protocol's ``cost`` key), after generate, one group at a time

Only what is missing is listed: complete shards, cached features and saved reference chunks cost a file
check. Every task is idempotent, so a requeued or resubmitted task redoes only what is missing. The collect
stage generates and extracts nothing: a task that did not finish makes it fail with a message saying to run
the same command again, which then lists only what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.executors.base import Stage
from harness.faults import fault_point
from harness.metrics import get_metric, measured_metrics
from harness.plan.cost import calibration, estimate_cell_seconds, model_key
from harness.plan.protocol import Plan
from harness.plan.real_floor import REAL_FAMILY
from harness.references.cache import (
    REFERENCE_CHUNK,
    ReferenceChunkTask,
    missing_chunks,
    reference_chunk,
    reference_features_path,
    reference_path,
)
from harness.reports import rows_to_frame, write_parquet, write_report
from harness.run.cost_stage import CostGroupTask, CostTask, run_cost_group, saved_cost_rows
from harness.run.extract import ExtractTask, extract_shard, missing_extractors
from harness.run.generate import ShardResult, generate_shard, shard_is_complete, wasted_rows
from harness.run.record import with_kept_rows
from harness.run.score import ScoreContext, score_cell
from harness.store import cell_dir, manifest_path, read_manifest


def say(msg: str) -> None:
    print(msg, flush=True)


@dataclass(frozen=True)
class CollectTask:
    """Picklable descriptor of the collect stage: score and report a fully generated and extracted run."""

    plan: Plan
    run_dir: str
    cache_dir: str
    device: str = "cpu"
    label: str = "collect"


def _generated(results: list[ShardResult]) -> str:
    return (f"generate: {sum(r.generated for r in results)} samples generated, "
            f"{sum(r.reused for r in results)} reused from earlier runs")


def generate_stage(plan: Plan, cell_dirs: dict[str, str], device: str, run_dir: Path) -> Stage:
    """The missing shards, each weighted by its estimated seconds (card ``cost`` block, else calibration)."""
    p = plan.protocol
    shards = plan.shards(cell_dirs, device)
    todo = [t for t in shards if not shard_is_complete(t)]
    if not todo:
        say(f"generate: nothing to do, all {len(shards)} shards complete")
    else:
        say(f"generate: {len(todo)} of {len(shards)} shards to do")
        cell_n = {cell_dirs[c.cell_id]: c.n for c in plan.cells}
        waste = sum(wasted_rows(t.start, t.stop, cell_n[t.cell_dir], t.batch_size) for t in todo)
        if waste:
            say(f"generate: shard_size {p.shard_size} is not a multiple of batch_size {p.batch_size}: {waste} "
                f"rows of batches cut by shard edges are generated and dropped (make shards whole batches)")
    cells = {cell_dirs[c.cell_id]: c for c in plan.cells}
    measured = calibration([run_dir]) if todo else {}
    estimates = {d: estimate_cell_seconds(c, measured=measured, nfe=plan.facts_of(c).nfe)
                 for d, c in cells.items() if any(t.cell_dir == d for t in todo)}
    return Stage("generate", generate_shard, tuple(todo),
                 weights=tuple(estimates[t.cell_dir].samples_seconds(t.stop - t.start) for t in todo),
                 groups=tuple(model_key(cells[t.cell_dir].model) for t in todo),
                 summary=_generated, done=len(shards) - len(todo), noun="shards")


def extract_stage(plan: Plan, cell_dirs: dict[str, str], cache: Path, device: str, extractors: tuple[str, ...]
                  ) -> Stage:
    """Every shard lacking features of an extractor (a shard still to generate: all of them)."""
    tasks = []
    shards = plan.shards(cell_dirs, device)
    for t in shards:
        needed = extractors
        if shard_is_complete(t):
            manifest = read_manifest(manifest_path(Path(t.cell_dir), t.start, t.stop))
            needed = tuple(missing_extractors(cache, extractors, manifest))
        if needed:
            tasks.append(ExtractTask(t.cell_dir, t.start, t.stop, needed, str(cache), device))
    return Stage("extract", extract_shard, tuple(tasks), after=("generate",),
                 weights=tuple(float(t.stop - t.start) for t in tasks), weight_unit="images",
                 groups=tuple(",".join(t.extractors) for t in tasks), done=len(shards) - len(tasks), noun="shards")


def reference_stage(plan: Plan, cache: Path, device: str, imported: bool) -> Stage:
    """The reference chunks still missing for artefacts not saved yet (statistics and feature rows share them)."""
    p = plan.protocol
    tasks: dict[str, ReferenceChunkTask] = {}
    for m in map(get_metric, p.metrics):
        if not m.needs_reference or (imported and m.reference_kind == "stats"):
            continue
        locate = reference_path if m.reference_kind == "stats" else reference_features_path
        for ds in p.datasets:
            if not locate(cache, ds, m.extractor, m.output, p.reference_n).exists():
                tasks.update((t.label, t) for t in missing_chunks(cache, ds, m.extractor, m.output, p.reference_n,
                                                                  device))
    chunks = tuple(tasks.values())
    return Stage("reference", reference_chunk, chunks, weights=tuple(float(t.stop - t.start) for t in chunks),
                 weight_unit="images", groups=tuple(f"{t.dataset}/{t.extractor}/{t.output}" for t in chunks),
                 noun=f"chunks of {REFERENCE_CHUNK} images")


def cost_tasks(plan: Plan, cell_dirs: dict[str, str], cache: Path, device: str, run_dir: Path) -> list[CostTask]:
    """One cost task per model cell when the protocol asks for the cost stage (the real-data floor runs no network)."""
    p = plan.protocol
    if p.cost is None:
        return []
    options = {"batch": p.batch_size, **dict(p.cost)}
    return [CostTask(cell_dirs[c.cell_id], str(cache), p.name, device, out=str(run_dir / "cost" / f"{c.cell_id}.json"),
                     **options) for c in plan.cells if c.model.family != REAL_FAMILY]


def cost_stage(plan: Plan, cell_dirs: dict[str, str], cache: Path, device: str, run_dir: Path) -> Stage:
    """The cells whose cost rows this run has not saved yet, after generation, in groups measured together (the
    cells of one model, or of the whole run: ``cost.interleave``) and one group at a time (``serial``: concurrent
    work would skew the timings)."""
    tasks = cost_tasks(plan, cell_dirs, cache, device, run_dir)
    todo = [t for t in tasks if saved_cost_rows(t) is None]
    model_of = {cell_dirs[c.cell_id]: c.model.name for c in plan.cells}
    groups: dict[str, list[CostTask]] = {}
    for t in todo:
        groups.setdefault("run" if t.interleave == "run" else model_of[t.cell_dir], []).append(t)
    if tasks:
        say(f"cost: {len(todo)} of {len(tasks)} cells to measure on {device}, their timed calls interleaved "
            f"by {tasks[0].interleave}" if todo else f"cost: nothing to do, all {len(tasks)} cells measured")
    return Stage("cost", run_cost_group, tuple(CostGroupTask(name, tuple(g)) for name, g in groups.items()),
                 after=("generate",), serial=True, done=len(tasks) - len(todo), noun="groups of cells")


def build_stages(plan: Plan, run_dir: Path, cache: Path, cell_dirs: dict[str, str], device: str = "cpu"
                 ) -> list[Stage]:
    """generate, reference, extract, cost, collect — what is missing of each, in the order an executor runs them."""
    p = plan.protocol
    extractors = tuple(sorted({get_metric(m).extractor for m in measured_metrics(p.metrics)}))
    generate = generate_stage(plan, cell_dirs, device, run_dir)
    reference = reference_stage(plan, cache, device, imported=p.reference_stats is not None)
    extract = extract_stage(plan, cell_dirs, cache, device, extractors)
    if extract.tasks or reference.tasks:
        say(f"extract: {len(extract.tasks)} of {len(extract.tasks) + extract.done} shards need features "
            f"({', '.join(extractors)}); {len(reference.tasks)} reference chunks of {REFERENCE_CHUNK} images")
    elif extractors:
        say(f"extract: nothing to do, features of all {extract.done} shards and the references are cached")
    cost = cost_stage(plan, cell_dirs, cache, device, run_dir)
    collect = Stage("collect", collect_run, (CollectTask(plan, str(run_dir), str(cache), device),),
                    after=("generate", "reference", "extract", "cost"), inline=True)
    return [generate, reference, extract, cost, collect]


def collected_cost_rows(plan: Plan, cell_dirs: dict[str, str], cache: Path, device: str, run_dir: Path) -> list:
    """The cost rows the cost stage saved for every model cell (none without the protocol's ``cost`` key)."""
    rows, missing = [], []
    for task in cost_tasks(plan, cell_dirs, cache, device, run_dir):
        saved = saved_cost_rows(task)
        if saved is None:
            missing.append(task.label)
        else:
            rows += saved
    if missing:
        raise HarnessError(f"{run_dir}: {len(missing)} cells have no cost rows after the cost jobs ended (first: "
                           f"{missing[0]}); run the same `harness run` again to measure them")
    return rows


def collect_run(task: CollectTask) -> str:
    """Score every cell from cached features and references, write results.parquet and the report.

    It generates and extracts nothing: a missing shard, feature file or reference chunk is refused with a
    message saying to run the same `harness run` again (which then does only what is missing)."""
    plan, run_dir, cache = task.plan, Path(task.run_dir), Path(task.cache_dir)
    p = plan.protocol
    cell_dirs = {c.cell_id: str(cell_dir(run_dir, c)) for c in plan.cells}
    shards = plan.shards(cell_dirs)
    incomplete = [t for t in shards if not shard_is_complete(t)]
    if incomplete:
        raise HarnessError(f"{run_dir}: {len(incomplete)} of {len(shards)} shards are not complete after their "
                           f"jobs ended (first: {incomplete[0].label}); run the same `harness run` again to "
                           f"resubmit them")
    extractors = tuple(sorted({get_metric(m).extractor for m in measured_metrics(p.metrics)}))
    unextracted = [t for t in shards if missing_extractors(
        cache, extractors, read_manifest(manifest_path(Path(t.cell_dir), t.start, t.stop)))]
    if unextracted:
        raise HarnessError(f"{run_dir}: {len(unextracted)} of {len(shards)} shards lack features after the "
                           f"extraction jobs ended (first: {unextracted[0].label}; see the job logs under "
                           f"{run_dir / 'slurm'}); run the same `harness run` again to resubmit them")
    imported = p.reference_stats.load() if p.reference_stats else None
    ctx = ScoreContext.of(p, run_dir, cache, task.device, imported, compute_references=False)
    rows, computed = [], 0
    for cell in plan.cells:
        cell_rows, n_new = score_cell(ctx, Path(cell_dirs[cell.cell_id]), plan.facts_of(cell).guidance)
        rows += cell_rows
        computed += n_new
    say(f"score: {computed} metric values computed, {len(rows) - computed} read from cache")
    rows += collected_cost_rows(plan, cell_dirs, cache, task.device, run_dir)
    frame = rows_to_frame(rows)
    if frame.value.isna().any():
        raise HarnessError("a metric produced NaN; nothing was written")
    fault_point("before_parquet")
    frame = with_kept_rows(frame, run_dir)  # an extended run keeps the rows of its earlier cells
    write_parquet(frame, run_dir / "results.parquet")
    written = write_report(run_dir, frame)
    say(f"report: {run_dir / 'results.parquet'}, " + ", ".join(str(w) for w in written))
    return str(run_dir / "results.parquet")
