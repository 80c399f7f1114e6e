"""The quickstart protocol at small n, end to end through the CLI: no interval the harness writes anywhere
(results.parquet, leaderboard.md/csv/tex, index.html) excludes its own value. At n = 24 < 256 features the
Fréchet distance's bootstrap replicates sit far above the value, which is where percentile intervals failed."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
NUMBER = r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
INTERVAL = re.compile(rf"({NUMBER}) \[({NUMBER}), ({NUMBER})\]")


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory, shared_cache) -> Path:
    run = tmp_path_factory.mktemp("quickstart") / "run"
    env = {**os.environ, "HARNESS_CACHE": str(shared_cache), "HARNESS_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "quickstart", "--set", "n=24", "--set",
                           "steps=[1]", "--set", "reference_n=500", "--set", "bootstrap=100", "--executor", "debug",
                           "--results", str(run)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return run


def _printed_intervals(text: str) -> list[tuple[float, float, float]]:
    return [tuple(float(v) for v in m.groups()) for m in INTERVAL.finditer(text)]


def _assert_all_contain(intervals: list[tuple[float, float, float]], where: str, at_least: int) -> None:
    assert len(intervals) >= at_least, f"{where}: only {len(intervals)} intervals found"
    bad = [iv for iv in intervals if not iv[1] <= iv[0] <= iv[2]]
    assert not bad, f"{where}: intervals excluding their value: {bad[:5]}"


@pytest.mark.slow
def test_results_parquet_intervals_contain_their_values(quickstart):
    frame = pd.read_parquet(quickstart / "results.parquet")
    quality = frame[frame.metric.isin(["fid_mnist", "class_alignment"])]
    assert quality.ci_low.notna().all() and quality.ci_high.notna().all()
    # the quickstart's cost stage (k = 20): p95 needs >= 59 calls and peak memory is one reading, so those rows
    # carry no interval; every interval that is there contains its value
    cost = frame.drop(quality.index)
    assert set(cost.metric) == {"latency_ms_b1", "latency_ms_b1_p95", "throughput_img_s", "peak_mem_mb",
                                "gflops_per_image"}
    assert cost[cost.metric.isin(["latency_ms_b1", "gflops_per_image"])].ci_low.notna().all()
    assert cost[cost.metric.isin(["latency_ms_b1_p95", "peak_mem_mb"])].ci_low.isna().all()
    with_ci = frame[frame.ci_low.notna()]
    _assert_all_contain(list(zip(with_ci.value, with_ci.ci_low, with_ci.ci_high, strict=True)), "results.parquet",
                        len(quality) + 2 * len(cost) // 5)


@pytest.mark.slow
def test_leaderboard_csv_intervals_contain_their_values(quickstart):
    table = pd.read_csv(quickstart / "leaderboard.csv")
    assert table.real_floor.sum() == 1  # the quickstart's real-data floor: no MMHM (never ranked)
    intervals = [(v, lo, hi) for name in ("fid_mnist", "class_alignment", "mmhm")
                 for v, lo, hi, floor in zip(table[name], table[f"{name}_ci_low"], table[f"{name}_ci_high"],
                                             table.real_floor, strict=True) if not (floor and name == "mmhm")]
    assert all(np.isfinite(intervals).ravel())
    _assert_all_contain(intervals, "leaderboard.csv", 3 * len(table) - 1)


@pytest.mark.parametrize("name", ["leaderboard.md", "leaderboard.tex", "index.html"])
@pytest.mark.slow
def test_printed_intervals_contain_their_values(quickstart, name):
    text = (quickstart / name).read_text()
    table = pd.read_csv(quickstart / "leaderboard.csv")
    if name == "index.html":
        text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    assert "±" not in text and r"\pm" not in text  # asymmetric intervals are never shown as ±
    # fid_mnist, class_alignment and MMHM per cell; the real-data floor has no MMHM
    _assert_all_contain(_printed_intervals(text), name, 3 * len(table) - int(table.real_floor.sum()))
