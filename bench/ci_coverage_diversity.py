"""Coverage of the 95 % intervals of density, coverage and the Vendi score (issue 18's metrics), measured as
``bench/ci_coverage.py`` measures FID's and KID's: many independent sample sets from a known population, one
interval per set built by the harness's own code (``compute`` → ``shard_replicates`` on ``bootstrap_indices`` →
``bootstrap_interval``), and the fraction of sets whose interval contains the target.

Paired differences (``harness report --compare``, MMHM): consecutive sets r, r+1 come from one population, so
the true Δ is 0; the Δ interval from their saved replicates (centred, b minus b, ``shifted_interval``) should
contain 0 in 95 % of pairs. Measured twice: from the raw bootstrap replicates and from the replicates
calibrated to the metric's own interval (what ``harness run`` saves: ``calibrated_replicates``).

Targets (docs/metrics.md, estimands): coverage and Vendi are biased in n, so the target is E[statistic of n samples
against this fixed reference], the mean of ``--target-draws`` independent point estimates at that n; density is a
mean of per-sample ball counts, its target the same mean (an unbiased estimate at every n).

Worlds (from ``bench/ci_coverage.py``): ``gauss`` (N(0.15·1, 1.3·I) samples in d = 16 against 2,000 rows of N(0, I))
and ``mnist`` (MNIST-CNN penultimate rows of training digits, classes 5–9 thinned, against 2,000 test-digit rows).

    OMP_NUM_THREADS=1 .venv/bin/python bench/ci_coverage_diversity.py [--draws 200] [--B 200]
        [--target-draws 1000] [--worlds gauss,mnist] [--n 100,1000] [--metrics density_mnist,...]
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench script's worlds

from ci_coverage import REPO, World, coverage_row, metric_sets_main  # noqa: E402

sys.path.insert(0, str(REPO))

from harness.metrics import get_metric  # noqa: E402
from harness.metrics.base import ShardFeatures  # noqa: E402
from harness.metrics.bootstrap import (  # noqa: E402
    bootstrap_indices,
    bootstrap_interval,
    calibrated_replicates,
    centred_replicates,
    shifted_interval,
)

METRICS = ("density_mnist", "coverage_mnist", "vendi_mnist")


def point(name: str, world: World, rows: np.ndarray) -> float:
    """The value only: the metric's replicate on the identity resample (its interval, e.g. Vendi's jackknife, can
    cost far more than the value, and the targets need thousands of values)."""
    metric = get_metric(name)
    reference = world.kid_reference if metric.needs_reference else None
    return float(metric.replicates(rows, (), reference, np.arange(len(rows))[None])[0])


def one_set(world: World, rng: np.random.Generator, n: int, b: int, cell: str,
            metrics: tuple[str, ...]) -> dict[str, tuple]:
    rows = world.draw(rng, n)[0]
    indices = bootstrap_indices(cell, n, b)
    out = {}
    for name in metrics:
        metric = get_metric(name)
        reference = world.kid_reference if metric.needs_reference else None
        shard = ShardFeatures(rows, ())
        result = metric.compute([shard], reference)
        reps = metric.shard_replicates([shard], reference, indices)
        low, high, _ = bootstrap_interval(name, result.value, (result.ci_low, result.ci_high), reps,
                                          metric.value_range)
        own = result.ci_low is not None and result.ci_high is not None
        out[name] = (result.value, low, high, reps,
                     calibrated_replicates(result.value, low, high, reps) if own else reps)
    return out


def delta_coverage(sets: list[dict], name: str, which: int) -> float:
    """Fraction of consecutive pairs whose Δ interval (replicates ``which``: 3 raw, 4 calibrated) contains 0."""
    hits = []
    for a, b in zip(sets[0::2], sets[1::2]):
        (va, *_), (vb, *_) = a[name], b[name]
        draws = centred_replicates(va, a[name][which]) - centred_replicates(vb, b[name][which])
        low, high = shifted_interval(va - vb, draws, f"Δ {name}")
        hits.append(low <= 0.0 <= high)
    return float(np.mean(hits))


def run(world: World, n: int, draws: int, b: int, target_draws: int, metrics: tuple[str, ...]) -> list[dict]:
    start = time.time()
    g = np.random.default_rng(5000 + n)
    targets = {}
    for name in metrics:
        values = np.array([point(name, world, world.draw(g, n)[0]) for _ in range(target_draws)])
        targets[name] = (float(values.mean()), float(values.std(ddof=1) / math.sqrt(target_draws)))
    rng = np.random.default_rng(n)
    sets = [one_set(world, rng, n, b, f"{world.name}-{n}-{r}", metrics) for r in range(draws)]
    return [{**coverage_row(world.name, n, name, sets, b, targets[name], start),
             "Δ=0 covered (raw reps)": f"{delta_coverage(sets, name, 3):.3f}",
             "Δ=0 covered (calibrated)": f"{delta_coverage(sets, name, 4):.3f}"} for name in metrics]


if __name__ == "__main__":
    metric_sets_main(__doc__, METRICS, run)
