"""Scheduling cost of a sweep on Slurm, three layouts of the same work: the smoke model over --cells cells
(steps 1..cells/2 × cfg {1, 2}), n=2, one shard per cell, metric class_alignment (MNIST CNN features):

* harness, cost-sized: `harness run --executor slurm` with the card's ``cost`` block (--seconds-per-nfe):
  shards bundled into array tasks of <= the profile's task budget, extraction as a shard array
  after the generation array, a collect job after both;
* harness, cost unknown: the same layout with one shard per array task (a card without ``cost``);
* one sbatch per cell: a generation job and an extraction job per cell, then the collect job.

Each side starts from an empty run directory and feature cache and ends when results.parquet is written.
Prints, per side, sbatch calls, array tasks, the time until everything was submitted and the wall time,
then the ratios to one sbatch per cell. Uses $SLURM_CONF if set, otherwise starts the single-node test cluster
(slurm/testcluster.sh, root only) and stops it afterwards.

    .venv/bin/python bench/scheduling.py [--cells 40] [--profile ci] [--seconds-per-nfe 0.5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HARNESS_PROGRESS", "0")

from harness.executors.slurm import Bundle, SlurmExecutor, describe, run_bundle  # noqa: E402
from harness.executors.slurm_profile import load_profile, task_budget_s  # noqa: E402
from harness.plan.protocol import load_protocol, make_plan  # noqa: E402
from harness.run.extract import ExtractTask, extract_shard  # noqa: E402
from harness.run.generate import generate_shard  # noqa: E402
from harness.run.runner import prepare_run, run_plan  # noqa: E402
from harness.run.stages import CollectTask, collect_run  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CARD = REPO / "model_zoo" / "cards" / "fm-tiny.yaml"


def sweep(cells: int, card: Path):
    steps = list(range(1, cells // 2 + 1))
    return make_plan(load_protocol(REPO / "protocols" / "smoke.yaml",
                                   [f"models=[{card}]", f"steps={steps}", "cfg=[1.0, 2.0]", "n=2", "shard_size=2",
                                    "metrics=[class_alignment]"]))


def wait_for_results(root: Path, timeout_s: float = 3600) -> None:
    end = time.time() + timeout_s
    while not (root / "results.parquet").exists():
        if time.time() > end:
            raise SystemExit(f"{root}: no results.parquet after {timeout_s} s; see the logs under {root / 'slurm'}")
        time.sleep(1.0)


def harness_side(plan, profile, root: Path) -> dict:
    ex = SlurmExecutor(profile, root, poll_s=1.0)
    start = time.perf_counter()
    run_plan(plan, root, root / "cache", ex)
    submitted = time.perf_counter() - start
    wait_for_results(root)
    return {"sbatch": ex.sbatch_calls, "tasks": sum(map(len, ex.submitted.values())), "submit_s": submitted,
            "wall_s": time.perf_counter() - start}


def per_cell_side(plan, profile, root: Path) -> dict:
    cache = root / "cache"
    cell_dirs = prepare_run(plan, root, cache)
    shards = plan.shards(cell_dirs)
    ex = SlurmExecutor(profile, root, poll_s=1.0)
    start = time.perf_counter()
    arrays = []
    for cell in plan.cells:
        own = [t for t in shards if t.cell_dir == cell_dirs[cell.cell_id]]
        gen = ex.submit(run_bundle, [Bundle(generate_shard, tuple(own))], "generate")
        extract = tuple(ExtractTask(t.cell_dir, t.start, t.stop, ("mnist-cnn",), str(cache)) for t in own)
        ext = ex.submit(run_bundle, [Bundle(extract_shard, extract)], "extract",
                        dependency=[gen[0].job_id.split("_")[0]])
        arrays.append(ext[0].job_id.split("_")[0])
    collect = ex.submit(collect_run, [CollectTask(plan, str(root), str(cache))], "collect", dependency=arrays,
                        time_min=profile.collect_time_min)
    submitted = time.perf_counter() - start
    ex.wait(collect, [describe(collect[0])], "collect")
    wait_for_results(root)
    return {"sbatch": ex.sbatch_calls, "tasks": 2 * len(plan.cells) + 1, "submit_s": submitted,
            "wall_s": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=40)
    ap.add_argument("--profile", default="ci")
    ap.add_argument("--seconds-per-nfe", type=float, default=0.5,
                    help="the cost block of the cost-sized side's card (estimated seconds per NFE per image)")
    args = ap.parse_args()
    profile = load_profile(args.profile)
    started_dir = None
    if not os.environ.get("SLURM_CONF"):
        started_dir = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
        env = {**os.environ, "SLURM_DIR": str(started_dir)}
        out = subprocess.run(["bash", str(REPO / "slurm" / "testcluster.sh"), "start"], env=env, check=True,
                             capture_output=True, text=True).stdout
        os.environ["SLURM_CONF"] = str(started_dir / "slurm.conf")
        os.environ["PATH"] = f"{started_dir / 'bin'}:{os.environ['PATH']}"
        print(out.strip().splitlines()[0])
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scheduling-") as tmp:
            costed = Path(tmp) / "fm-tiny.yaml"  # the same model and cells, with an estimated cost
            costed.write_text(CARD.read_text() + f"cost: {{seconds_per_nfe: {args.seconds_per_nfe}}}\n")
            plan = sweep(args.cells, CARD)
            sides = {"harness, cost-sized": harness_side(sweep(args.cells, costed), profile, Path(tmp) / "costed"),
                     "harness, cost unknown": harness_side(plan, profile, Path(tmp) / "unknown"),
                     "one sbatch per cell": per_cell_side(plan, profile, Path(tmp) / "per-cell")}
    finally:
        if started_dir is not None:
            subprocess.run(["bash", str(REPO / "slurm" / "testcluster.sh"), "stop"],
                           env={**os.environ, "SLURM_DIR": str(started_dir)}, check=False)
    print(f"{len(plan.cells)} cells, {len(plan.cells)} shards, metric class_alignment; profile {profile.source} "
          f"(array_parallelism {profile.array_parallelism}, task budget {task_budget_s(profile):.0f} s); "
          f"cost-sized card: {args.seconds_per_nfe} s/NFE")
    print(f"{'':>22} {'sbatch calls':>12} {'array tasks':>11} {'submit s':>9} {'wall s':>8}")
    for name, r in sides.items():
        print(f"{name:>22} {r['sbatch']:>12} {r['tasks']:>11} {r['submit_s']:>9.1f} {r['wall_s']:>8.1f}")
    base = sides["one sbatch per cell"]
    for name in ("harness, cost-sized", "harness, cost unknown"):
        r = sides[name]
        print(f"ratio {name} / per cell: sbatch calls {r['sbatch'] / base['sbatch']:.3f}, submit time "
              f"{r['submit_s'] / base['submit_s']:.3f}, wall time {r['wall_s'] / base['wall_s']:.3f}")


if __name__ == "__main__":
    main()
