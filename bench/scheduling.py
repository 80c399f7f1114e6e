"""Scheduling cost of a sweep on Slurm: job arrays (what `harness run --executor slurm` does) vs one sbatch
per cell, on the same work: the smoke model over --cells cells (steps 1..cells/2 × cfg {1, 2}), n=2, one
shard per cell, no metrics. Each side starts from an empty run directory; both wait until every shard is done.

Prints, per side, the number of sbatch calls, the time until all jobs were submitted, and the wall time until
every shard was complete, then the ratios. Uses $SLURM_CONF if set, otherwise starts the single-node test
cluster (slurm/testcluster.sh, root only) and stops it afterwards.

    .venv/bin/python bench/scheduling.py [--cells 40] [--profile ci]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HARNESS_PROGRESS", "0")

from harness.protocol import load_protocol, make_plan  # noqa: E402
from harness.runner import prepare_run  # noqa: E402
from harness.sampling import generate_shard, shard_is_complete  # noqa: E402
from harness.slurm_executor import SlurmExecutor, describe  # noqa: E402
from harness.slurm_profile import load_profile  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def sweep(cells: int):
    steps = list(range(1, cells // 2 + 1))
    return make_plan(load_protocol(REPO / "protocols" / "smoke.yaml",
                                   [f"steps={steps}", "cfg=[1.0, 2.0]", "n=2", "shard_size=2", "metrics=[]"]))


def one_side(plan, profile, root: Path, per_cell: bool) -> dict:
    cache = root / "cache"
    shards = plan.shards(prepare_run(plan, root, cache))
    ex = SlurmExecutor(profile, root, poll_s=1.0)
    start = time.perf_counter()
    if per_cell:
        jobs = [job for task in shards for job in ex.submit(generate_shard, [task], "generate")]
    else:
        jobs = ex.submit(generate_shard, shards, "generate")
    submitted = time.perf_counter() - start
    ex.wait(jobs, [describe(t) for t in shards], "generate")
    wall = time.perf_counter() - start
    assert all(shard_is_complete(t) for t in shards), "a shard is missing after its job ended"
    return {"sbatch": ex.sbatch_calls, "submit_s": submitted, "wall_s": wall, "shards": len(shards)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=40)
    ap.add_argument("--profile", default="ci")
    args = ap.parse_args()
    profile = load_profile(args.profile)
    plan = sweep(args.cells)
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
            arrays = one_side(plan, profile, Path(tmp) / "arrays", per_cell=False)
            single = one_side(plan, profile, Path(tmp) / "per-cell", per_cell=True)
    finally:
        if started_dir is not None:
            subprocess.run(["bash", str(REPO / "slurm" / "testcluster.sh"), "stop"],
                           env={**os.environ, "SLURM_DIR": str(started_dir)}, check=False)
    print(f"{len(plan.cells)} cells, {arrays['shards']} shards, profile {profile.source} "
          f"(array_parallelism {profile.array_parallelism}, MaxArraySize {profile.max_array_size})")
    print(f"{'':>22} {'sbatch calls':>12} {'submit s':>9} {'wall s':>8}")
    for name, r in (("arrays (harness)", arrays), ("one sbatch per cell", single)):
        print(f"{name:>22} {r['sbatch']:>12} {r['submit_s']:>9.1f} {r['wall_s']:>8.1f}")
    ratio = {key: arrays[key] / single[key] for key in ("sbatch", "submit_s", "wall_s")}
    print(f"ratio arrays/per-cell: sbatch calls {ratio['sbatch']:.3f}, submit time {ratio['submit_s']:.3f}, "
          f"wall time {ratio['wall_s']:.3f}")


if __name__ == "__main__":
    main()
