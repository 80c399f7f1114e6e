"""Coverage of the 95 % intervals of the provisional scaled metrics (csFID, csIS; harness/metrics/scaled.py),
measured as ``bench/ci_coverage.py`` measures FID's: many independent sample sets from a known population, one
interval per set built by the harness's own code (component ``compute`` → ``shard_replicates`` on
``bootstrap_indices``, then the composite's ``combine`` on the paired replicates, as the score stage does), and the
fraction of sets whose interval contains the target.

Target: the composites are plug-in statistics biased in n (FID_n and IS_n are), so the target is E[composite of n
samples against this fixed reference], the mean of ``--target-draws`` independent point estimates at that n.

Worlds (from ``bench/ci_coverage.py``): ``gauss`` and ``mnist`` give each sample a feature row (FID, on the
``fid_mnist`` code path) and logits (IS, the ``is_mnist`` class). CLIP weights are not available offline, so each
sample's CLIP score is synthetic and tied to its features: 100 · (0.28 + 0.03 · z + 0.04 · e), z the sample's
standardised projection on a fixed direction of the feature space, e ~ N(0, 1) — so the alignment is correlated
with where the sample lies, and the pairing of the replicates matters. Its replicates are the means of the
resampled scores, exactly what ``TextImageMetric.shard_replicates`` computes.

    OMP_NUM_THREADS=1 .venv/bin/python bench/ci_coverage_scaled.py [--draws 200] [--B 200]
        [--target-draws 1000] [--worlds gauss,mnist] [--n 100,1000] [--metrics csfid,csfid_shifted,csis]
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
from harness.metrics.base import MetricResult, ShardFeatures  # noqa: E402
from harness.metrics.bootstrap import bootstrap_indices  # noqa: E402

METRICS = ("csfid", "csfid_shifted", "csis")
BASES = {"fid": "fid_mnist", "is": "is_mnist"}  # the composite's base component -> the class computing it here


class Scores:
    """The synthetic per-sample CLIP score of a world: tied to a fixed direction of its feature space."""

    def __init__(self, world: World) -> None:
        rows = world.draw(np.random.default_rng(99), 20_000)[0].astype(np.float64)
        self.direction = np.random.default_rng(7).normal(size=rows.shape[1])
        projection = rows @ self.direction
        self.mean, self.sd = float(projection.mean()), float(projection.std())

    def __call__(self, rng: np.random.Generator, rows: np.ndarray) -> np.ndarray:
        z = (rows.astype(np.float64) @ self.direction - self.mean) / self.sd
        return 100.0 * (0.28 + 0.03 * z + 0.04 * rng.normal(size=len(rows)))


def components(world: World, scores: Scores, rng: np.random.Generator, n: int, indices: np.ndarray | None
               ) -> tuple[dict[str, MetricResult], dict[str, np.ndarray]]:
    """Results and (with ``indices``) paired replicates of fid, is and clip_score on one drawn set."""
    x, logits, labels = world.draw(rng, n)
    clip = scores(rng, x)
    results = {"clip_score": MetricResult(float(clip.mean()), None, None, n)}
    reps = {"clip_score": clip[indices].mean(axis=1)} if indices is not None else {}
    for base, name in BASES.items():
        metric = get_metric(name)
        shard = ShardFeatures(x if base == "fid" else logits, labels)
        reference = world.fid_reference if metric.needs_reference else None
        results[base] = metric.compute([shard], reference)
        if indices is not None:
            reps[base] = metric.shard_replicates([shard], reference, indices)
    return results, reps


def run(world: World, n: int, draws: int, b: int, target_draws: int, metrics: tuple[str, ...]) -> list[dict]:
    start = time.time()
    scores = Scores(world)
    g = np.random.default_rng(5000 + n)
    point = {m: [] for m in metrics}
    for _ in range(target_draws):
        results, _ = components(world, scores, g, n, None)
        for m in metrics:
            point[m].append(get_metric(m).combine(results, {})[0].value)
    targets = {m: (float(np.mean(v)), float(np.std(v, ddof=1) / math.sqrt(target_draws))) for m, v in point.items()}
    rng = np.random.default_rng(n)
    sets = []
    for r in range(draws):
        results, reps = components(world, scores, rng, n, bootstrap_indices(f"{world.name}-{n}-{r}", n, b))
        one = {}
        for m in metrics:
            result, _ = get_metric(m).combine(results, reps)
            one[m] = (result.value, result.ci_low, result.ci_high)
        sets.append(one)
    return [coverage_row(world.name, n, m, sets, b, targets[m], start) for m in metrics]


if __name__ == "__main__":
    metric_sets_main(__doc__, METRICS, run)
