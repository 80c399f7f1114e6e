"""CMMD distance: ours (float64, row blocks, the reference's own term reusable across cells) vs the CMMD reference
code's formula (torch float32, whole n x n kernel matrices), on the same synthetic CLIP-like embeddings.

Each side runs in a fresh subprocess so its peak RSS is its own (torch import included on both). Printed per
side: wall time, peak RSS, the value and its distance from an exact float64 evaluation. Embeddings: 768-d unit
vectors around a shared direction (pairwise cosine ~0.5, like CLIP image embeddings), the generated set shifted.

    PYTHONPATH=. .venv/bin/python bench/kernel_metrics.py [--n 10000] [--dim 768]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def embeddings(n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.normal(size=dim)
    base /= np.linalg.norm(base)

    def unit(shift: float) -> np.ndarray:
        x = base + rng.normal(size=(n, dim)) / np.sqrt(dim) + shift * rng.normal(size=dim) / np.sqrt(dim)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return unit(0.3), unit(0.0)


def reference_formula(x: np.ndarray, y: np.ndarray) -> float:
    """CMMD's reference distance as published: float32 torch, whole kernel matrices, diagonals in, x1000."""
    import torch

    x, y = torch.from_numpy(x), torch.from_numpy(y)
    gamma = 1 / (2 * 10 ** 2)

    def mean_kernel(a, b):
        return torch.mean(torch.exp(-gamma * (-2 * a @ b.T + (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :])))

    return float(1000 * (mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y)))


def child(side: str, n: int, dim: int) -> None:
    import torch  # noqa: F401 - imported on both sides so RSS compares like with like

    from harness.metrics.cmmd import cmmd, kernel_mean

    gen, ref = embeddings(n, dim)
    t = time.perf_counter()
    if side == "ours":
        value = cmmd(gen, ref)
    elif side == "ours-cached":  # a later cell of a sweep: the reference's own term is already known
        term = kernel_mean(ref.astype(np.float64), ref.astype(np.float64))
        t = time.perf_counter()
        value = cmmd(gen, ref, reference_term=term)
    else:
        value = reference_formula(gen, ref)
    seconds = time.perf_counter() - t
    print(json.dumps({"value": value, "seconds": seconds,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="rows per side")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--child", choices=["ours", "ours-cached", "reference"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.n, args.dim)
    out = {}
    for side in ("reference", "ours", "ours-cached"):
        done = subprocess.run([sys.executable, __file__, "--child", side, "--n", str(args.n), "--dim", str(args.dim)],
                              capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        out[side] = json.loads(done.stdout.strip().splitlines()[-1])
    exact = out["ours"]["value"]
    for side, r in out.items():
        print(f"cmmd n={args.n} x {args.n}, d={args.dim}, {side:<11}: {r['seconds']:7.2f} s, peak RSS "
              f"{r['rss_mb']:7.0f} MB, value {r['value']:.6f}, |d vs float64| {abs(r['value'] - exact):.2e}")
    print(f"time ratio reference / ours {out['reference']['seconds'] / out['ours']['seconds']:.2f}x, "
          f"reference / ours-cached {out['reference']['seconds'] / out['ours-cached']['seconds']:.2f}x; "
          f"RSS ratio reference / ours {out['reference']['rss_mb'] / out['ours']['rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
