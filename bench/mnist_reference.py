"""MNIST reference statistics (fid_mnist: mnist-cnn penultimate) for N images, in a fresh process and a fresh
cache each time, for one or more source trees side by side (runs interleaved: tree A, tree B, A, B, ...).

What it measures: ``harness.references.cache.reference_stats`` from a cold process — the dataset read and decoded as the
first chunk needs it, every 128-image chunk extracted — excluding interpreter start-up and the CNN's weight load.
Before the per-process MNIST cache each chunk re-verified and re-unpickled the whole ``mnist.pkl.gz``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/mnist_reference.py --n 1000 --repeats 3 --tree /path/to/main --tree .
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import sys, tempfile, time
from pathlib import Path
from harness.features import loaded_extractor
from harness.references.cache import reference_stats
n = int(sys.argv[1])
loaded_extractor("mnist-cnn", "cpu")  # weights load excluded
with tempfile.TemporaryDirectory() as cache:
    start = time.perf_counter()
    stats = reference_stats(Path(cache), "mnist", "mnist-cnn", "penultimate", n)
    print(time.perf_counter() - start, float(stats.mu.sum()))
"""


def run_once(tree: Path, n: int) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HARNESS_PROGRESS": "0"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(n)], env=env, cwd=tree, capture_output=True, text=True,
                          check=True)
    seconds, checksum = done.stdout.split()
    return float(seconds), float(checksum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tree", type=Path, action="append", help="source tree to time (default: this one)")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [REPO])]
    times: dict[Path, list[float]] = {t: [] for t in trees}
    sums: dict[Path, set[float]] = {t: set() for t in trees}
    for _ in range(args.repeats):
        for tree in trees:
            seconds, checksum = run_once(tree, args.n)
            times[tree].append(seconds)
            sums[tree].add(checksum)
    base = statistics.median(times[trees[0]])
    print(f"reference_stats(mnist, mnist-cnn/penultimate, n={args.n}), fresh process and cache, "
          f"{args.repeats} runs each (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    for tree in trees:
        median = statistics.median(times[tree])
        runs = ", ".join(f"{t:.2f}" for t in times[tree])
        print(f"  {tree}: median {median:.2f} s ({runs}); {base / median:.2f}x vs the first tree; "
              f"sum(mu) {sorted(sums[tree])}")


if __name__ == "__main__":
    main()
