"""Fault injection on local runs, each compared with an uninterrupted run of the same protocol.

* SIGKILL at >= 20 seeded random points across generation, extraction, scoring and the report, re-running
  after each: byte-identical images, identical feature caches and metric values, no sample missing or
  duplicated, no orphaned temp file counted as a result.
* Two `harness run` processes on one results directory at once: both finish, no shard generated twice.
* A shard corrupted on disk after completion: `harness status` reports it, the next run regenerates it.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "protocols" / "smoke.yaml")
FAST = ("--set", "metrics=[class_alignment]")  # the MNIST CNN: a real network, milliseconds per shard
# Fault points → how often an uninterrupted smoke run reaches them (24 samples, 8 shards, 4 cells, 1 metric).
POINTS = {"after_png": 24, "after_journal": 24, "before_manifest": 8, "after_feature": 8, "after_score": 4,
          "before_parquet": 1}
STAGE = {"after_png": "generate", "after_journal": "generate", "before_manifest": "generate",
         "after_feature": "extract", "after_score": "score", "before_parquet": "report"}

pytestmark = pytest.mark.slow


def cmd(*args: str, cache: Path, fault: str | None = None) -> list:
    env = {**os.environ, "HARNESS_CACHE": str(cache), "HARNESS_PROGRESS": "0"}
    env.pop("HARNESS_FAULT_DELAY", None)
    env.pop("HARNESS_FAULT", None)
    if fault:
        env["HARNESS_FAULT"] = fault
    return [[sys.executable, "-m", "harness.cli", *args], env]


def harness(*args: str, cache: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    argv, env = cmd(*args, cache=cache, fault=fault)
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def run_smoke(run: Path, cache: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    return harness("run", SMOKE, *FAST, "--executor", "debug", "--results", str(run), cache=cache, fault=fault)


def _cli_child(argv: list[str], env: dict[str, str], log: str) -> None:
    """Runs `harness ARGV` in a process forked from a warm, clean server, as a fresh CLI process would."""
    os.chdir(REPO)
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from harness.cli import main

    code = main(argv)
    sys.stdout.flush()
    os._exit(code)


@pytest.fixture(scope="module")
def warm_cli():
    """SIGKILL tests run dozens of CLI processes: fork them from a forkserver that has imported torch and the
    harness once (and never ran a torch op, so forking it is safe) instead of paying ~5 s of imports each."""
    ctx = mp.get_context("forkserver")
    mp.set_forkserver_preload(["torch", "matplotlib.pyplot", "harness.cli", "harness.run.runner", "harness.features",
                               "harness.metrics", "harness.models.adapters"])

    def run(run_dir: Path, cache: Path, fault: str | None, log: Path) -> tuple[int, str]:
        argv, env = cmd("run", SMOKE, *FAST, "--executor", "debug", "--results", str(run_dir), cache=cache,
                        fault=fault)
        proc = ctx.Process(target=_cli_child, args=(argv[3:], env, str(log)))
        proc.start()
        proc.join(600)
        return proc.exitcode, log.read_text()

    return run


def images(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.glob("cells/*/images/*.png"))}


def values(run: Path) -> pd.DataFrame:
    frame = pd.read_parquet(run / "results.parquet").drop(columns=["created_at", "run", "sec_per_image"])
    return frame.sort_values(["cell_id", "metric"]).reset_index(drop=True)


def features(cache: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for path in sorted(cache.glob("features/*/*.npz")):
        with np.load(path) as data:
            out[str(path.relative_to(cache))] = {k: data[k] for k in data.files}
    return out


def assert_same_as(run: Path, cache: Path, reference: Path) -> None:
    assert images(run) == images(reference)
    pd.testing.assert_frame_equal(values(run), values(reference))
    got, want = features(cache), features(reference / "cache")
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].keys() == want[key].keys()
        for name in want[key]:
            np.testing.assert_array_equal(got[key][name], want[key][name])
    for cell in run.glob("cells/*"):  # every sample exactly once, no leftover journal
        n = json.loads((cell / "cell.json").read_text())["n"]
        listed = [s["index"] for m in sorted(cell.glob("shards/*.json")) for s in json.loads(m.read_text())["samples"]]
        assert listed == list(range(n)), cell
        assert len(list(cell.glob("images/*.png"))) == n
        assert not list(cell.glob("shards/*.journal"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("uninterrupted")
    done = run_smoke(run, run / "cache")
    assert done.returncode == 0, done.stderr
    return run


def remaining_work(run: Path, cache: Path) -> dict[str, int]:
    """How often each fault point will still be reached by the next run, read from disk."""
    manifests = list(run.glob("cells/*/shards/*.json"))
    journaled = sum(len(p.read_text().splitlines()) for p in run.glob("cells/*/shards/*.journal"))
    samples_left = POINTS["after_png"] - sum(len(json.loads(p.read_text())["samples"]) for p in manifests) - journaled
    return {"after_png": samples_left, "after_journal": samples_left,
            "before_manifest": POINTS["before_manifest"] - len(manifests),
            "after_feature": POINTS["after_feature"] - len(list(cache.glob("features/*/*.npz"))),
            "after_score": POINTS["after_score"] - len(list(cache.glob("scores/*.json"))), "before_parquet": 1}


def nth_event(left: dict[str, int], r: int) -> tuple[str, int]:
    """The r-th (0-based) of the remaining events, as (fault point, K-th time it is reached)."""
    for name, n in left.items():
        if r < n:
            return name, r + 1
        r -= n
    raise IndexError(r)


def test_sigkill_at_random_points_then_resume_is_identical(tmp_path, uninterrupted, warm_cli):
    rng = random.Random(20261122)
    kills, runs, chains, orphans = Counter(), 0, 0, 0
    while sum(kills.values()) < 21:
        chains += 1
        run, cache = tmp_path / f"chain{chains}", tmp_path / f"chain{chains}-cache"
        kills_here: Counter = Counter()
        for _ in range(7):  # up to 7 kills at random points still ahead of this run, then one clean run
            # a uniformly random event among those still ahead, so every stage gets its share of kills
            left = {name: n for name, n in remaining_work(run, cache).items() if n > 0}
            if list(left) == ["before_parquet"] and kills_here["report"]:
                break  # only the report is left and it was already killed once in this chain
            name, k = nth_event(left, rng.randrange(sum(left.values())))
            fault = f"{name}:{k}"
            rc, log = warm_cli(run, cache, fault, tmp_path / f"run{runs}.log")
            runs += 1
            assert rc == -9, (fault, rc, log)
            kills[STAGE[name]] += 1
            kills_here[STAGE[name]] += 1
            assert not (run / "results.parquet").exists()  # nothing is reported before every stage is done
        rc, log = warm_cli(run, cache, None, tmp_path / f"run{runs}.log")
        runs += 1
        assert rc == 0, log
        orphans += len(list(run.rglob(".*.tmp"))) + len(list(cache.rglob(".*.tmp")))
        assert_same_as(run, cache, uninterrupted)
    assert set(kills) == {"generate", "extract", "score", "report"}, kills
    print(f"\nfault injection: {sum(kills.values())} SIGKILLs at seeded random points "
          f"({dict(sorted(kills.items()))}), {chains} runs resumed to completion, {runs} processes; "
          f"{orphans} orphaned temp files left by kills, none counted")


def test_two_concurrent_runs_on_one_directory(tmp_path, uninterrupted):
    run, cache = tmp_path / "run", tmp_path / "cache"
    procs = []
    for _ in range(2):
        argv, env = cmd("run", SMOKE, *FAST, "--executor", "debug", "--results", str(run), cache=cache)
        procs.append(subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    generated = [int(line.split()[1]) for out, _ in outs for line in out.splitlines()
                 if line.startswith("generate:") and "samples generated" in line]
    assert sum(generated) == 24, outs  # every sample generated by exactly one of the two processes
    assert_same_as(run, cache, uninterrupted)


def test_corrupted_shard_is_reported_and_regenerated(tmp_path, uninterrupted):
    run, cache = tmp_path / "run", tmp_path / "cache"
    assert run_smoke(run, cache).returncode == 0
    png = sorted(run.glob("cells/*/images/*.png"))[5]
    data = bytearray(png.read_bytes())
    data[len(data) // 2] ^= 0xFF
    png.write_bytes(bytes(data))
    manifest = sorted(run.glob("cells/*/shards/*.json"))[-1]
    manifest.write_text(manifest.read_text()[:50])  # cut short
    status = harness("status", str(run), cache=cache)
    assert status.returncode == 0, status.stderr
    assert "6/8 shards complete" in status.stdout and status.stdout.count("1 corrupt") == 2
    again = run_smoke(run, cache)
    assert again.returncode == 0, again.stderr
    # the flipped PNG alone, and the whole shard whose manifest was unreadable, are regenerated
    assert "generate: 2 of 8 shards to do" in again.stdout
    assert "samples generated" in again.stdout
    assert_same_as(run, cache, uninterrupted)
    assert "8/8 shards complete" in harness("status", str(run), cache=cache).stdout
