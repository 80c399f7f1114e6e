"""The smoke protocol on a real single-node Slurm, through submitit job arrays, against the debug executor.

Faults: `scontrol requeue` of a task mid-shard, `scancel` of a task then re-running `harness run`, and a task
that hits its time limit and is requeued through the checkpoint path. Each ends complete and identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.support.slurm_cluster import slurm_cluster  # noqa: F401  (session fixture)

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "protocols" / "smoke.yaml")
FAST = ("--set", "metrics=[class_alignment]")  # the MNIST CNN: a real network, milliseconds per shard

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
COUNTS = {"requeues survived": 0}


def harness(*args: str, cache: Path, delay: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_CACHE": str(cache), "HARNESS_PROGRESS": "0", "HARNESS_SLURM_MIN_QUERY_S": "0"}
    env.pop("HARNESS_FAULT", None)
    env.pop("HARNESS_FAULT_DELAY", None)
    if delay:
        env["HARNESS_FAULT_DELAY"] = delay  # exported by sbatch into the array tasks
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"rc={done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    return done.stdout


def images(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.glob("cells/*/images/*.png"))}


def values(run: Path) -> pd.DataFrame:
    frame = pd.read_parquet(run / "results.parquet").drop(columns=["created_at", "run", "sec_per_image"])
    return frame.sort_values(["cell_id", "metric"]).reset_index(drop=True)


def jobs(run: Path, stage: str = "generate") -> list[dict]:
    return [r for r in map(json.loads, (run / "jobs.jsonl").read_text().splitlines()) if r["stage"] == stage]


def squeue_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-r", "-h", "--states=all", "-j", job_id.split("_")[0], "-o", "%i|%T"],
                         capture_output=True, text=True, timeout=30).stdout
    return dict(line.split("|") for line in out.split()).get(job_id, "UNKNOWN")


def wait_until(predicate, timeout: float, what: str, poll: float = 0.5):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def task_starts(run: Path, job_id: str) -> int:
    """How many times submitit started this task (1 + the requeues it survived)."""
    log = run / "slurm" / job_id / f"{job_id}_0_log.out"
    return log.read_text().count("Starting with JobEnvironment") if log.exists() else 0


def debug_run(tmp_path_factory, *overrides: str) -> Path:
    run = tmp_path_factory.mktemp("debug")
    ok(harness("run", SMOKE, *overrides, "--executor", "debug", "--results", str(run), cache=run / "cache"))
    return run


@pytest.fixture(scope="module")
def debug_fast(tmp_path_factory) -> Path:
    return debug_run(tmp_path_factory, *FAST)


def assert_identical(run: Path, reference: Path) -> None:
    assert images(run) == images(reference)
    pd.testing.assert_frame_equal(values(run), values(reference))
    assert not list(run.glob("cells/*/shards/*.journal"))


def test_smoke_as_arrays_equals_the_debug_executor_byte_for_byte(slurm_cluster, tmp_path, tmp_path_factory):  # noqa: F811
    reference = debug_run(tmp_path_factory)  # full smoke: FID (Inception) and class alignment
    run, cache = tmp_path / "run", tmp_path / "cache"  # own cache: every feature recomputed inside Slurm
    out = ok(harness("run", SMOKE, "--executor", "slurm", "--profile", "ci", "--wait", "--results", str(run),
                     cache=cache))
    assert "generate: 8 of 8 shards submitted as 1 array job(s)" in out
    submitted = jobs(run)
    assert sorted(r["task"] for r in submitted) == list(range(8))  # one array task per shard, indexed from 0
    assert len({r["array_job"] for r in submitted}) == 1 and len({r["item"] for r in submitted}) == 8
    assert images(run) == images(reference) and len(images(run)) == 24
    pd.testing.assert_frame_equal(values(run), values(reference))
    assert set(values(run).metric) == {"fid", "class_alignment"}
    # extraction ran as arrays: every shard after generation, the FID reference's chunks with no dependency;
    # the collect job only scored (it extracts nothing: a missing feature fails it)
    assert sorted(r["item"] for r in jobs(run, "extract")) == sorted(f"extract/{r['item']}" for r in submitted)
    chunks = [r["item"] for r in jobs(run, "reference")]
    assert chunks and all(c.startswith("reference/mnist-5k/inception-fid-helper/") for c in chunks)
    collect = jobs(run, "collect")[0]["job_id"]
    log = (run / "slurm" / collect / f"{collect}_0_log.out").read_text()
    assert "score: 8 metric values computed, 0 read from cache" in log and "report: " in log
    assert "8/8 shards complete; results.parquet present" in ok(harness("status", str(run), cache=cache))
    again = ok(harness("run", SMOKE, "--executor", "slurm", "--profile", "ci", "--results", str(run), cache=cache))
    assert "nothing to do" in again and len(jobs(run)) == 8  # nothing resubmitted


def test_cost_sized_bundles_run_as_fewer_tasks_and_equal_the_debug_executor(slurm_cluster, tmp_path,  # noqa: F811
                                                                           debug_fast):
    card = tmp_path / "fm-tiny.yaml"  # the same model (identity, cells, images) with a measured cost
    card.write_text((REPO / "model_zoo" / "cards" / "fm-tiny.yaml").read_text()
                    + "cost: {seconds_per_nfe: 20, gpu: h100}\n")
    run, cache = tmp_path / "run", tmp_path / "cache"
    out = ok(harness("run", SMOKE, *FAST, "--set", f"models=[{card}]", "--executor", "slurm", "--profile", "ci",
                     "--wait", "--results", str(run), cache=cache))
    # shards cost 80 40 | 160 80 | 160 80 | 320 160 s; the ci budget is 10 min - 60 s = 540 s
    assert "generate: 8 of 8 shards submitted as 1 array job(s)" in out and "(3 tasks)" in out
    submitted = jobs(run)
    assert len({r["item"] for r in submitted}) == 8 == len(submitted)  # every shard exactly once
    assert [r["task"] for r in submitted] == [0] * 5 + [1] * 2 + [2]
    extracted = jobs(run, "extract")  # the 8 shards' mnist-cnn features: 24 images, one extraction task
    assert len(extracted) == 8 and {r["task"] for r in extracted} == {0}
    assert_identical(run, debug_fast)


def _submit(run: Path, cache: Path, *extra: str, delay: str, profile: str = "ci") -> str:
    return ok(harness("run", SMOKE, *FAST, *extra, "--executor", "slurm", "--profile", profile,
                      "--results", str(run), cache=cache, delay=delay))


def _journal_lines(run: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in run.glob("cells/*/shards/*.journal"))


def test_scontrol_requeue_mid_shard_resumes_and_ends_identical(slurm_cluster, tmp_path, debug_fast):  # noqa: F811
    run, cache = tmp_path / "run", tmp_path / "cache"
    _submit(run, cache, delay="after_journal:0.7")
    first = jobs(run)[0]["job_id"]
    wait_until(lambda: squeue_state(first) == "RUNNING" and _journal_lines(run) >= 1, 120, f"{first} mid-shard")
    subprocess.run(["scontrol", "requeue", first], check=True, timeout=30)
    # Re-running while the arrays are in flight submits no shard again: it only adds a collect job and waits.
    out = ok(harness("run", SMOKE, *FAST, "--executor", "slurm", "--profile", "ci", "--wait",
                     "--results", str(run), cache=cache))
    assert "generate: 0 of 8 shards submitted" in out and len(jobs(run)) == 8
    wait_until(lambda: (run / "results.parquet").exists(), 300, "results.parquet")
    assert task_starts(run, first) == 2, "the requeued task should have started twice"
    COUNTS["requeues survived"] += 1
    assert_identical(run, debug_fast)


def test_scancel_of_one_task_then_rerun_submits_only_it(slurm_cluster, tmp_path, debug_fast):  # noqa: F811
    run, cache = tmp_path / "run", tmp_path / "cache"
    # 1.5 s per sample: long enough that scancel lands mid-shard even on an idle machine (0.3 s raced there)
    _submit(run, cache, delay="after_journal:1.5")
    victim = jobs(run)[0]
    wait_until(lambda: squeue_state(victim["job_id"]) == "RUNNING", 120, "the first task to start")
    subprocess.run(["scancel", victim["job_id"]], check=True, timeout=30)
    collect = jobs(run, "collect")[0]["job_id"]
    wait_until(lambda: squeue_state(collect) in ("FAILED", "COMPLETED", "CANCELLED"), 300, "the collect job")
    assert squeue_state(collect) == "FAILED"
    log = (run / "slurm" / collect / f"{collect}_0_log.err").read_text()
    assert "1 of 8 shards are not complete" in log and "run the same `harness run` again" in log
    status = ok(harness("status", str(run), cache=cache))
    assert "7/8 shards complete" in status and "[slurm: 1 cancelled]" in status
    assert "slurm collect jobs: 1 failed" in status, status  # the jobs after generation are shown too
    assert "slurm extract jobs:" in status, status
    out = ok(harness("run", SMOKE, *FAST, "--executor", "slurm", "--profile", "ci", "--wait",
                     "--results", str(run), cache=cache))
    assert "generate: 1 of 8 shards submitted" in out
    resubmitted = jobs(run)[8:]
    assert [r["item"] for r in resubmitted] == [victim["item"]]
    assert_identical(run, debug_fast)


def test_time_limit_requeues_through_the_checkpoint_and_resumes(slurm_cluster, tmp_path, tmp_path_factory):  # noqa: F811
    one_cell = ("--set", "steps=[1]", "--set", "cfg=[1.0]", "--set", "shard_size=6")
    reference = debug_run(tmp_path_factory, *FAST, *one_cell)
    # 1-minute limit, USR2 40 s before it: signalled ~20 s into the task. submitit installs its USR2 handler only
    # after Python, torch and the task pickle have loaded; a signal before that kills the task (seen at 10 s on a
    # loaded machine), so the start-up gets 20 s. Each start then generates a few of the 6 samples (6 s each).
    profile = tmp_path / "short.yaml"
    profile.write_text("partition: debug\ncpus_per_task: 1\nmem_gb: 1\ntime_min: 1\nsignal_delay_s: 40\n"
                       "max_num_timeout: 6\nmax_array_size: 1001\narray_parallelism: 2\ncollect_time_min: 10\n"
                       "extract_time_min: 10\n")  # only generation meets the short limit
    run, cache = tmp_path / "run", tmp_path / "cache"
    done = harness("run", SMOKE, *FAST, *one_cell, "--executor", "slurm", "--profile", str(profile), "--wait",
                   "--results", str(run), cache=cache, delay="after_journal:6")
    task = jobs(run)[0]["job_id"]
    log = "".join((run / "slurm" / task / f"{task}_0_log.{kind}").read_text() for kind in ("out", "err"))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-3000:]}\ntask log:\n{log[-3000:]}"
    assert "generate: 1 of 1 shards submitted" in done.stdout
    assert "this job is timed-out" in log and "Calling checkpoint method" in log
    starts = task_starts(run, task)
    assert starts >= 2, log[-2000:]
    COUNTS["requeues survived"] += starts - 1
    assert_identical(run, reference)
    print(f"\nslurm faults: {COUNTS['requeues survived']} requeues survived (scontrol requeue + time limits)")
