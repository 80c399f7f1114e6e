"""``harness run``: plan → generate → extract → score → report, each stage skipping what is done."""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError
from harness.executors.base import Executor
from harness.faults import fault_point
from harness.metrics import get_metric
from harness.models.cards import require_pinned
from harness.plan.protocol import Plan
from harness.references.cache import (
    REFERENCE_CHUNK,
    ReferenceChunkTask,
    reference_chunks,
    reference_path,
    save_reference,
)
from harness.reports import rows_to_frame, write_parquet, write_report
from harness.run.extract import ExtractTask, feature_task, missing_extractors
from harness.run.generate import generate_shard, shard_is_complete, wasted_rows
from harness.run.record import claim_run_dir, with_kept_rows, write_run_record
from harness.run.score import score_cell
from harness.store import ensure_writable, manifest_path, read_manifest, write_cell


def say(msg: str) -> None:
    print(msg, flush=True)


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
             require_generated: bool = False, require_features: bool = False, extend: bool = False) -> Path:
    """``require_generated`` / ``require_features``: refuse to generate / extract (the Slurm collect step:
    both ran in array tasks before it). ``extend``: use a results directory holding another protocol's run,
    keeping its cells and rows (else it is refused)."""
    p = plan.protocol
    cell_dirs = prepare_run(plan, run_dir, cache_dir, extend)
    imported = p.reference_stats.load() if p.reference_stats else None  # validated before any compute

    shards = plan.shards(cell_dirs, device)
    todo = [t for t in shards if not shard_is_complete(t)]
    if todo and require_generated:
        raise HarnessError(f"{run_dir}: {len(todo)} of {len(shards)} shards are not complete after their jobs "
                           f"ended (first: {todo[0].cell_dir}/shards/{todo[0].name}); run the same "
                           f"`harness run` again to resubmit them")
    if todo:
        say(f"generate: {len(todo)} of {len(shards)} shards to do")
        cell_n = {cell_dirs[c.cell_id]: c.n for c in plan.cells}
        waste = sum(wasted_rows(t.start, t.stop, cell_n[t.cell_dir], t.batch_size) for t in todo)
        if waste:
            say(f"generate: shard_size {p.shard_size} is not a multiple of batch_size {p.batch_size}: {waste} "
                f"rows of batches cut by shard edges are generated and dropped (make shards whole batches)")
        results = executor.map(generate_shard, todo, desc="generate")
        made = sum(r.generated for r in results)
        say(f"generate: {made} samples generated, {sum(r.reused for r in results)} reused from earlier runs")
    else:
        say(f"generate: nothing to do, all {len(shards)} shards complete")

    metrics = [get_metric(m) for m in p.metrics]
    extractors = tuple(sorted({m.extractor for m in metrics}))
    tasks: list[ExtractTask | ReferenceChunkTask] = []
    for t in shards:
        digest = read_manifest(manifest_path(Path(t.cell_dir), t.start, t.stop)).content_digest
        if missing_extractors(cache_dir, extractors, digest):
            tasks.append(ExtractTask(t.cell_dir, t.start, t.stop, extractors, str(cache_dir), device))
    n_shard_tasks = len(tasks)
    references = {}  # path → (dataset, extractor, output, start and stop of its chunks in ``tasks``)
    for m in metrics if imported is None else ():
        for ds in p.datasets if m.needs_reference and m.reference_kind == "stats" else ():
            path = reference_path(cache_dir, ds, m.extractor, m.output, p.reference_n)
            if not path.exists() and path not in references:
                chunks = reference_chunks(ds, m.extractor, m.output, p.reference_n, device)
                references[path] = (ds, m.extractor, m.output, len(tasks), len(tasks) + len(chunks))
                tasks += chunks
    if tasks and require_features:
        raise HarnessError(f"{run_dir}: {n_shard_tasks} shards lack features and {len(references)} reference "
                           f"statistics are missing after the extraction jobs ended (see their logs under "
                           f"{run_dir / 'slurm'}); run the same `harness run` again to resubmit them")
    if tasks:
        say(f"extract: {n_shard_tasks} of {len(shards)} shards need features ({', '.join(extractors)}); "
            f"{len(references)} reference statistics to compute ({len(tasks) - n_shard_tasks} chunks "
            f"of {REFERENCE_CHUNK} images)")
        results = executor.map(feature_task, tasks, desc="extract")
        for path, (ds, ext, output, a, b) in references.items():
            save_reference(path, ds, ext, output, p.reference_n, results[a:b])
    elif extractors:
        say(f"extract: nothing to do, features of all {len(shards)} shards and the reference statistics are cached")

    rows, computed = [], 0
    for cell in plan.cells:
        guidance = plan.facts_of(cell).guidance
        cell_rows, n_new = score_cell(p.name, Path(cell_dirs[cell.cell_id]), p.shard_size, p.metrics, cache_dir,
                                      p.reference_n, guidance, device, bootstrap=p.bootstrap, run_dir=run_dir,
                                      stats_reference=imported)
        rows += cell_rows
        computed += n_new
    say(f"score: {computed} metric values computed, {len(rows) - computed} read from cache")
    frame = rows_to_frame(rows)
    if frame.value.isna().any():
        raise HarnessError("a metric produced NaN; nothing was written")
    fault_point("before_parquet")
    frame = with_kept_rows(frame, run_dir)  # an extended run keeps the rows of its earlier cells
    write_parquet(frame, run_dir / "results.parquet")
    written = write_report(run_dir, frame)
    say(f"report: {run_dir / 'results.parquet'}, " + ", ".join(str(w) for w in written))
    return run_dir
