"""Overhead of `harness run` (generation stage) over a bare loop calling the same adapter on the same seeds.

Both sides run in this process, interleaved, on the quickstart sweep without metrics (28 cells, n = 100 each):
the bare loop calls ``adapter.sample`` on the cell's batches [k·B, (k+1)·B) ∩ [0, n) and keeps the uint8
arrays; the harness plans cells, derives seeds, generates the same aligned batches (no padding), checks
images, writes PNGs + journal + manifests through the debug executor and the (empty) report. Prints each
repeat, the best-of ratio and the median ratio (target <= 1.05 for the tiny generator on CPU) and the load.

    .venv/bin/python bench/overhead.py [--repeats 5] [--n 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HARNESS_PROGRESS", "0")

from harness.executors.base import DebugExecutor  # noqa: E402
from harness.plan.protocol import load_protocol, make_plan  # noqa: E402
from harness.run.generate import loaded_adapter, requests_for  # noqa: E402
from harness.run.runner import run_plan  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def bare_loop(plan) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    p = plan.protocol
    for cell in plan.cells:
        adapter = loaded_adapter(cell, "cpu")
        for b in range(0, cell.n, p.batch_size):
            adapter.sample(requests_for(cell, list(range(b, min(b + p.batch_size, cell.n)))))
    return time.perf_counter() - start, time.process_time() - cpu


def harness_run(plan, root: Path) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    run_plan(plan, root / "run", root / "cache", DebugExecutor())
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    plan = make_plan(load_protocol(REPO / "protocols" / "quickstart.yaml", ["metrics=[]", f"n={args.n}"]))
    samples = len(plan.cells) * plan.protocol.n
    bare_loop(plan)  # warm-up: model load and first-call kernel selection are excluded from both sides
    bare, harness = [], []
    for i in range(args.repeats):  # interleaved, so slow phases of a shared machine hit both sides
        bare.append(bare_loop(plan))
        with tempfile.TemporaryDirectory() as tmp:
            harness.append(harness_run(plan, Path(tmp)))
        (wb, cb), (wh, ch) = bare[-1], harness[-1]
        print(f"repeat {i}: wall bare {wb:.2f} s / harness {wh:.2f} s = {wh / wb:.3f}; "
              f"cpu bare {cb:.2f} s / harness {ch:.2f} s = {ch / cb:.3f} ({samples} samples, {len(plan.cells)} cells)")
    # Minimum per side = least noise-affected cost on a shared machine; CPU time (all threads of this
    # process) ignores time stolen by neighbours, so it is the steadier of the two ratios.
    for k, name in ((0, "wall"), (1, "cpu")):
        best = min(h[k] for h in harness) / min(b[k] for b in bare)
        med = statistics.median(h[k] / b[k] for h, b in zip(harness, bare))
        print(f"{name} ratio harness/bare: best-of-{args.repeats} {best:.3f}, median {med:.3f} (target <= 1.05)")
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))

if __name__ == "__main__":
    main()
