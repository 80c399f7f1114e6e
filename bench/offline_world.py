"""Targets of the offline MNIST world, measured with the harness itself.

Runs ``protocols/quickstart.yaml`` (what ``make demo`` runs: every cell at n = 1,000 against the 10,000
held-out test digits) into a temporary results directory with ``harness run --executor local`` (timed: this
is also the demo's wall time), reads ``results.parquet`` — including the protocol's real-data floor cell (1,000 MNIST
TRAINING digits drawn per requested class with the cell seeds, scored exactly like a model) — then prints the
table and each target:

- best multi-step flow cell: class alignment >= 0.97 and fid_mnist <= 3 x the floor;
- flow model, cfg 1 (no guidance), 8 steps: class alignment >= 0.90;
- MeanFlow at 1 NFE: class alignment >= 0.90, fid_mnist <= 8 x the floor, below the flow model's at 1 NFE;
- the student at 1 NFE: fid_mnist below the flow model's at 1 NFE.

    .venv/bin/python bench/offline_world.py [--n 1000] [--executor local] [--set key=value ...]
    .venv/bin/python bench/offline_world.py --results DIR [--results DIR2 ...]  # read existing runs (merged)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from harness.plan.real_floor import REAL_FAMILY  # noqa: E402

HARNESS = [sys.executable, "-m", "harness.cli"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}


def harness(*args: str) -> None:
    subprocess.run([*HARNESS, *args], check=True, cwd=REPO, env={**os.environ, **OFFLINE})


def run_quickstart(results: Path, cache: Path, n: int, executor: str, overrides: list[str]) -> float:
    start = time.perf_counter()
    sets = [arg for item in [f"n={n}", *overrides] for arg in ("--set", item)]
    harness("run", "protocols/quickstart.yaml", "--results", str(results), "--executor", executor,
            "--cache", str(cache), *sets)
    return time.perf_counter() - start


def real_floor(runs: list[Path]) -> dict[str, float]:
    """fid_mnist and class alignment of the run's real-data floor cell (``real: [mnist-train]`` in the protocol:
    n MNIST TRAINING digits drawn per requested class with the cell seeds, harness/plan/real_floor.py)."""
    rows = pd.concat([pd.read_parquet(run / "results.parquet") for run in runs], ignore_index=True)
    floor = rows[rows.family == REAL_FAMILY]
    if floor.empty:
        raise SystemExit(f"{', '.join(map(str, runs))}: no real-data floor cell; run protocols/quickstart.yaml "
                         "(it has `real: [mnist-train]`)")
    return floor.groupby("metric").value.first().to_dict() | {"n": int(floor.n.iloc[0])}


def cell_table(runs: list[Path]) -> pd.DataFrame:
    rows = pd.concat([pd.read_parquet(run / "results.parquet") for run in runs], ignore_index=True)
    rows = rows[rows.family != REAL_FAMILY]
    rows["cfg"] = rows["cfg"].astype(object).where(rows["cfg"].notna(), None)
    table = rows.pivot_table(index=["model", "steps", "cfg", "nfe_mean"], columns="metric", values="value",
                             dropna=False).reset_index()
    return table.dropna(subset=["fid_mnist"])


def check(table: pd.DataFrame, floor: dict[str, float]) -> list[tuple[str, bool | None, str]]:
    """Each target: (name, met, detail); met is None when a cell it needs is not in the runs read."""
    f = floor["fid_mnist"]
    fm = table[table.model == "fm-mnist"]
    cell = lambda model, steps, cfg=None: table[(table.model == model) & (table.steps == steps)  # noqa: E731
                                                & ((table.cfg == cfg) if cfg is not None else True)].iloc[0]
    setting = lambda row: f"steps {row.steps}, cfg {row.cfg}"  # noqa: E731

    def best_multistep() -> tuple[bool, str]:
        multi = fm[fm.steps > 1]
        both = multi[(multi.class_alignment >= 0.97) & (multi.fid_mnist <= 3 * f)]
        best = multi.loc[multi.fid_mnist.idxmin()]  # the best cell by FID, shown whether or not it passes
        return len(both) > 0, (f"lowest fid_mnist {best.fid_mnist:.1f} = {best.fid_mnist / f:.2f} x floor, alignment "
                               f"{best.class_alignment:.3f} ({setting(best)}); highest alignment "
                               f"{multi.class_alignment.max():.3f}; {len(both)} cells pass")

    def at_least(row_of, metric: str, bound: float) -> tuple[bool, str]:
        row = row_of()
        return row[metric] >= bound, f"{row[metric]:.3f}"

    def fid_within(row_of, times: float) -> tuple[bool, str]:
        row = row_of()
        return row.fid_mnist <= times * f, f"{row.fid_mnist:.1f} = {row.fid_mnist / f:.2f} x floor"

    def beats_flow_1nfe(model: str) -> tuple[bool, str]:
        ours, flow = cell(model, 1).fid_mnist, cell("fm-mnist", 1, 1.0).fid_mnist
        return ours < flow, f"{ours:.1f} vs {flow:.1f}"

    targets = [
        ("a multi-step flow cell with alignment >= 0.97 and fid_mnist <= 3 x floor", best_multistep),
        ("flow cfg 1, 8 steps: alignment >= 0.90", lambda: at_least(lambda: cell("fm-mnist", 8, 1.0),
                                                                    "class_alignment", 0.90)),
        ("MeanFlow 1 NFE: alignment >= 0.90", lambda: at_least(lambda: cell("meanflow-mnist", 1),
                                                               "class_alignment", 0.90)),
        ("MeanFlow 1 NFE: fid_mnist <= 8 x floor", lambda: fid_within(lambda: cell("meanflow-mnist", 1), 8)),
        ("MeanFlow 1 NFE beats flow 1 NFE (fid_mnist)", lambda: beats_flow_1nfe("meanflow-mnist")),
        ("student 1 NFE beats flow 1 NFE (fid_mnist)", lambda: beats_flow_1nfe("student-mnist")),
    ]
    out: list[tuple[str, bool | None, str]] = []
    for name, measure in targets:
        try:
            met, detail = measure()
        except (IndexError, ValueError):  # a cell it needs is not in the runs read
            met, detail = None, "not measured (cell missing from these runs)"
        out.append((name, bool(met) if met is not None else None, detail))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="samples per cell and real training digits (default 1000)")
    ap.add_argument("--results", type=Path, action="append", default=[],
                    help="an existing quickstart run to read instead of running one (repeat to merge runs)")
    ap.add_argument("--executor", default="local", help="for the run: debug | local (default, what make demo uses)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="protocol override for the run, as harness run --set (e.g. to run a subset of models)")
    ap.add_argument("--cache", type=Path, help="feature/reference cache (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="offline_world_") as tmp_name:
        tmp = Path(tmp_name)
        cache = args.cache or tmp / "cache"
        runs = args.results
        if not runs:
            runs = [tmp / "run"]
            seconds = run_quickstart(runs[0], cache, args.n, args.executor, args.overrides)
            print(f"harness run protocols/quickstart.yaml --executor {args.executor} (n={args.n}"
                  f"{''.join(', ' + o for o in args.overrides)}): {seconds:.0f} s", flush=True)
        floor = real_floor(runs)
        table = cell_table(runs)
    pd.set_option("display.width", 160)
    print(table.sort_values(["model", "steps", "cfg"], na_position="first").to_string(index=False))
    print(f"\nreal floor: {floor['n']} MNIST training digits: fid_mnist {floor['fid_mnist']:.2f}, "
          f"class alignment {floor['class_alignment']:.3f}\n")
    results_ok = check(table, floor)
    for name, ok, detail in results_ok:
        print(f"{'----' if ok is None else 'PASS' if ok else 'MISS'}  {name}: {detail}")
    print(f"\n{sum(bool(ok) for _, ok, _ in results_ok)} of {len(results_ok)} targets met")


if __name__ == "__main__":
    main()
