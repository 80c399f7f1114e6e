"""Metric-engine benchmarks, each measured side by side in one run (speed targets live here, not in tests).

1. Fréchet distance at d=2048 on synthetic full-rank covariances: ours (float64 symmetric eigh) vs the
   clean-fid / pytorch-fid formula with ``scipy.linalg.sqrtm``; wall ratio and |ΔFID| (targets >= 4x, <= 1e-8).
2. Peak RSS of FID streamed over 50k synthetic 2048-d rows (batches of 1000 generated on the fly), in a
   fresh subprocess so nothing else counts (target <= 1 GB).
3. FID + IS + KID on the same N images and the same (random Kaiming) weights: the engine's single pass
   (decode once, one Inception pass per image feeding all three) vs torch-fidelity ``calculate_metrics``.
4. Bootstrap cost: B=200 FID replicates at d=2048 for an n-sample cell (Gram form).

    .venv/bin/python bench/metrics.py [--images 32] [--rows 50000] [--cell-n 1000]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def synthetic_stats(rng: np.random.Generator, d: int, shift: float):
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(shift, 1, size=d), a @ a.T + 0.1 * np.eye(d)


def bench_frechet(d: int) -> None:
    import scipy.linalg

    from harness.metrics.fid import frechet_distance

    rng = np.random.default_rng(0)
    (m1, s1), (m2, s2) = synthetic_stats(rng, d, 0.0), synthetic_stats(rng, d, 0.3)
    t = time.perf_counter()
    ours, _ = frechet_distance(m1, s1, m2, s2)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    theirs = float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)
    t_scipy = time.perf_counter() - t
    print(f"frechet d={d}: ours {t_ours:.2f} s, scipy sqrtm {t_scipy:.2f} s, ratio {t_scipy / t_ours:.2f}x, "
          f"FID {ours:.6f}, |dFID| {abs(ours - theirs):.2e}")


def rss_child(rows: int, d: int) -> None:
    from harness.metrics.fid import StreamingStats, frechet_distance

    rng = np.random.default_rng(1)
    stats = StreamingStats()
    for start in range(0, rows, 1000):
        stats.update(rng.normal(size=(min(1000, rows - start), d)).astype(np.float32))
    m2, s2 = synthetic_stats(rng, d, 0.1)
    value, _ = frechet_distance(stats.mean, stats.cov, m2, s2)
    print(f"{value} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")


def bench_rss(rows: int, d: int) -> None:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(rows), "--dim", str(d)], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.split()
    print(f"streamed FID over {rows} x {d} rows: peak RSS {int(out[1]) / 1024:.0f} MB (whole process incl. "
          f"torch import), {time.perf_counter() - t:.1f} s, FID {float(out[0]):.4f}")


def bench_engine_vs_torch_fidelity(n: int) -> None:
    import pytest
    import torch_fidelity
    from metric_fixtures import image_set, use_inception_weights, write_random_inception_weights
    from test_metric_certify import _Uint8Chw

    from harness.features import get_extractor
    from harness.features.inception_tf1 import WEIGHTS_ENTRY, WEIGHTS_FILE
    from harness.features.reference import ReferenceFeatures, ReferenceStats
    from harness.metrics import get_metric
    from harness.metrics.base import ShardFeatures

    with tempfile.TemporaryDirectory() as tmp:
        weights = write_random_inception_weights(Path(tmp) / WEIGHTS_ENTRY / WEIGHTS_FILE)
        use_inception_weights(pytest.MonkeyPatch(), Path(tmp))
        gen, ref = image_set(1, n, 64), image_set(2, n, 64, bright=0.8)
        t = time.perf_counter()
        ext = get_extractor("inception-tf1")
        ext.load()
        g, r = ext.extract(gen), ext.extract(ref)
        rows = r["pool3"].astype(np.float64)
        spec = {"output": "pool3"}
        stats = ReferenceStats(rows.mean(0), np.cov(rows, rowvar=False), n, ext.spec.key, "bench", spec)
        ours = {
            "fid": get_metric("fid_tf1").compute([ShardFeatures(g["pool3"], (None,) * n)], stats).value,
            "is": get_metric("is").compute([ShardFeatures(g["logits_unbiased"], (None,) * n)], None).value,
            "kid": get_metric("kid").compute([ShardFeatures(g["pool3"], (None,) * n)],
                                             ReferenceFeatures(r["pool3"], ext.spec.key, "bench", spec)).value}
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        theirs = torch_fidelity.calculate_metrics(
            input1=_Uint8Chw(gen), input2=_Uint8Chw(ref), cuda=False, isc=True, fid=True, kid=True,
            feature_extractor_weights_path=str(weights), kid_subset_size=n, cache=False, save_cpu_ram=True,
            verbose=False)
        t_tf = time.perf_counter() - t
    print(f"FID+IS+KID on {n}+{n} images 64x64 (CPU, {os.cpu_count()} cores): engine {t_ours:.1f} s, "
          f"torch-fidelity {t_tf:.1f} s, ratio {t_tf / t_ours:.2f}x; |dFID| "
          f"{abs(ours['fid'] - theirs['frechet_inception_distance']):.2e}, |dIS| "
          f"{abs(ours['is'] - theirs['inception_score_mean']):.2e}, |dKID| "
          f"{abs(ours['kid'] - theirs['kernel_inception_distance_mean']):.2e}")


def bench_bootstrap(n: int, d: int, b: int) -> None:
    from harness.metrics.bootstrap import bootstrap_indices
    from harness.metrics.fid import frechet_replicates

    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, d))
    mu, sigma = synthetic_stats(rng, d, 0.1)
    idx = bootstrap_indices("bench", n, b)
    t = time.perf_counter()
    values = frechet_replicates(x, mu, sigma, idx)
    print(f"bootstrap FID: B={b} replicates, n={n}, d={d}: {time.perf_counter() - t:.1f} s "
          f"(CI {np.percentile(values, 2.5):.3f} .. {np.percentile(values, 97.5):.3f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--cell-n", type=int, default=1000)
    p.add_argument("--replicates", type=int, default=200)
    p.add_argument("--only", choices=["frechet", "rss", "engine", "bootstrap"])
    p.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rss_child:
        return rss_child(args.rss_child, args.dim)
    steps = {"frechet": lambda: bench_frechet(args.dim), "rss": lambda: bench_rss(args.rows, args.dim),
             "engine": lambda: bench_engine_vs_torch_fidelity(args.images),
             "bootstrap": lambda: bench_bootstrap(args.cell_n, args.dim, args.replicates)}
    for name, step in steps.items():
        if args.only in (None, name):
            step()


if __name__ == "__main__":
    main()
