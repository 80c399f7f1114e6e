"""End to end through the CLI: idempotent re-runs, kill-and-resume, shard-layout and executor invariance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "protocols" / "smoke.yaml")
FAST = ["--set", "metrics=[class_alignment]"]  # the MNIST CNN: real network, milliseconds per shard


def harness(*args: str, cache: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_CACHE": str(cache), "HARNESS_PROGRESS": "0"}
    env.pop("HARNESS_FAULT", None)
    if fault:
        env["HARNESS_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def images(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.glob("cells/*/images/*.png"))}


def values(run: Path) -> pd.DataFrame:
    frame = pd.read_parquet(run / "results.parquet")
    # created_at and sec_per_image are measurements of this run, not results
    frame = frame.drop(columns=["created_at", "run", "sec_per_image"])
    return frame.sort_values(["cell_id", "metric"]).reset_index(drop=True)


@pytest.mark.slow
def test_second_run_does_nothing_and_gives_the_same_parquet(tmp_path, shared_cache):
    run = tmp_path / "run"
    first = harness("run", SMOKE, "--executor", "debug", "--results", str(run), cache=shared_cache)
    assert first.returncode == 0, first.stderr
    for name in ("results.parquet", "leaderboard.md", "plots/fid_vs_steps_mnist-5k.png"):
        assert (run / name).is_file(), name
    before = values(run)
    second = harness("run", SMOKE, "--executor", "debug", "--results", str(run), cache=shared_cache)
    assert second.returncode == 0, second.stderr
    assert "generate: nothing to do, all 8 shards complete" in second.stdout
    assert "extract: nothing to do" in second.stdout
    assert "score: 0 metric values computed, 8 read from cache" in second.stdout
    pd.testing.assert_frame_equal(values(run), before)
    frame = pd.read_parquet(run / "results.parquet")
    assert set(frame.metric) == {"fid", "class_alignment"} and len(frame) == 8
    assert frame.value.notna().all() and (frame[frame.metric == "fid"].value > 0).all()
    # NFE accounting reaches the results: cfg 2 doubles the network calls
    nfe = frame.groupby(["steps", "cfg"]).nfe_mean.first().to_dict()
    assert nfe == {(1, 1.0): 1, (1, 2.0): 2, (2, 1.0): 2, (2, 2.0): 4}
    status = harness("status", "--results", str(run), cache=shared_cache)
    assert "8/8 shards complete" in status.stdout
    board = (run / "leaderboard.md").read_text()
    assert "| fm-tiny |" in board and "fid ↓" in board and "class_alignment ↑" in board
    (run / "leaderboard.md").unlink()
    report = harness("report", "--results", str(run), cache=shared_cache)
    assert report.returncode == 0 and (run / "leaderboard.md").read_text() == board


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("uninterrupted")
    done = harness("run", SMOKE, *FAST, "--executor", "debug", "--results", str(run), cache=run / "cache")
    assert done.returncode == 0, done.stderr
    return run


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["after_png:1", "after_png:7", "after_journal:4", "before_manifest:3"])
def test_sigkill_then_resume_is_byte_identical(tmp_path, uninterrupted, fault):
    run, cache = tmp_path / "run", tmp_path / "cache"  # own cache: the metric is recomputed, not reused
    killed = harness("run", SMOKE, *FAST, "--executor", "debug", "--results", str(run), cache=cache, fault=fault)
    assert killed.returncode == -9, (killed.returncode, killed.stderr)
    assert not (run / "results.parquet").exists()
    status = harness("status", "--results", str(run), cache=cache)
    assert status.returncode == 0 and "pending" in status.stdout and "/8 shards complete" in status.stdout
    assert "8/8 shards complete" not in status.stdout
    resumed = harness("run", SMOKE, *FAST, "--executor", "debug", "--results", str(run), cache=cache)
    assert resumed.returncode == 0, resumed.stderr
    assert "reused from earlier runs" in resumed.stdout
    assert images(run) == images(uninterrupted)
    pd.testing.assert_frame_equal(values(run), values(uninterrupted))
    assert not list(run.glob("cells/*/shards/*.journal"))


@pytest.mark.slow
def test_shard_size_and_executor_do_not_change_a_pixel(tmp_path, uninterrupted):
    reference = images(uninterrupted)
    assert len(reference) == 24
    for shard_size, executor in [(1, "debug"), (3, "local"), (16, "debug"), (16, "local")]:
        run = tmp_path / f"s{shard_size}-{executor}"
        done = harness("run", SMOKE, "--set", "metrics=[]", "--set", f"shard_size={shard_size}",
                       "--executor", executor, "--results", str(run), cache=tmp_path / "cache")
        assert done.returncode == 0, done.stderr
        assert images(run) == reference, (shard_size, executor)


def test_worker_failure_is_one_line_and_writes_nothing(tmp_path):
    """A checkpoint whose sha256 is wrong fails inside a local worker; the error reaches the CLI as one line."""
    from harness.models.adapters import discover

    adapter = discover()["flow_matching"].tiny()
    ckpt = tmp_path / "fm.pt"
    sha = adapter.save_checkpoint(ckpt)
    params = ", ".join(f"{k}: {v}" for k, v in adapter.card.params.items())
    card = tmp_path / "bad-sha.yaml"
    card.write_text(f"name: bad-sha\nfamily: flow_matching\nweights: {ckpt}\n"
                    f"weights_sha256: {'f' * 64}\nparams: {{{params}}}\n")
    assert sha != "f" * 64
    run = tmp_path / "run"
    bad = harness("run", SMOKE, "--set", f"models=[{card}]", "--set", "metrics=[]", "--executor", "local",
                  "--results", str(run), cache=tmp_path / "cache")
    assert bad.returncode == 2, bad.stderr
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "sha256 mismatch" in last and str(ckpt) in last
    assert not list(run.glob("cells/*/images/*.png")) and not (run / "results.parquet").exists()


def test_bad_input_exits_before_generating(tmp_path):
    run = tmp_path / "run"
    bad = harness("run", SMOKE, "--set", "steps=[0]", "--results", str(run), cache=tmp_path / "cache")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "steps[0]" in bad.stderr
    assert not run.exists()
