"""Every condition a user can get wrong on the command line: one ``error:`` line naming the flag, file or key and
what is allowed, exit 2, no traceback, nothing computed. One row of the table per condition (issue 14 item 6-7).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

import harness.store
from harness.cli import main
from tests.support.report_rows import make_run, sweep_cells

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "protocols" / "smoke.yaml")
FAST = ["--set", "metrics=[class_alignment]"]


def _read_only(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """``directory`` behaves as on a read-only mount (EROFS) for the writability probe; tests run as root, where
    chmod does not stop writes."""
    real = tempfile.NamedTemporaryFile

    def probe(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own keyword
        if dir is not None and Path(dir).resolve() == directory.resolve():
            raise OSError(errno.EROFS, "Read-only file system", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(harness.store.tempfile, "NamedTemporaryFile", probe)


def _fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, srun: bool) -> None:
    """sbatch that refuses every job (as with a wrong account) and, optionally, an srun that exists."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: Batch job submission failed: Invalid account' "
                                    ">&2\nexit 1\n")
    names = ["sbatch", "srun"] if srun else ["sbatch"]
    if srun:
        (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for name in names:
        (bin_dir / name).chmod(0o755)
    # Only the fakes without srun: a real Slurm installed on this machine (the cluster tests install one)
    # must not make "no srun" untrue.
    monkeypatch.setenv("PATH", str(bin_dir) if not srun else f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")


def _run(tmp_path: Path, *extra: str) -> list[str]:
    return ["run", SMOKE, *FAST, "--executor", "debug", "--results", str(tmp_path / "results"), *extra]


def _report_run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run", sweep_cells(), images=2)


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return path


# name → (set-up returning argv, fragments the single line must contain)
Case = Callable[[Path, pytest.MonkeyPatch], list[str]]
CASES: dict[str, tuple[Case, tuple[str, ...]]] = {
    "workers zero": (lambda t, m: _run(t, "--workers", "0"), ("--workers", "0", "integer >= 1")),
    "workers negative": (lambda t, m: _run(t, "--workers", "-3"), ("--workers", "-3", "integer >= 1")),
    "workers not a number": (lambda t, m: _run(t, "--workers", "two"), ("--workers", "'two'", "integer >= 1")),
    "workers without the local executor": (lambda t, m: _run(t, "--workers", "2"),
                                           ("--workers 2", "--executor local only", "debug")),
    "calibrate missing directory": (lambda t, m: ["plan", SMOKE, "--calibrate", str(t / "nonexistent")],
                                    ("--calibrate", "nonexistent", "does not exist", "run directory")),
    "calibrate not a run directory": (lambda t, m: ["plan", SMOKE, "--calibrate", str(t)],
                                      ("--calibrate", "is not a run directory", "no cells/")),
    "n absurd": (lambda t, m: ["plan", SMOKE, "--set", "n=100000000"], ("'n'", "100000000", "<= 10000000")),
    "reference_n absurd": (lambda t, m: ["validate", SMOKE, "--set", "reference_n=100000000"],
                           ("'reference_n'", "100000000", "<= 10000000")),
    # results under a file: a harness without the size check stops at the directory check, never generates
    "run above the sweep limit": (
        lambda t, m: ((t / "file").write_text("x"), ["run", SMOKE, "--set", "n=1000000", "--set", "shard_size=1",
                                                     "--executor", "debug", "--results", str(t / "file" / "run")])[1],
        ("4,000,000 shards", "500,000 shards", "--allow-large", "shard_size")),
    "device not a device": (lambda t, m: _run(t, "--device", "banana"), ("--device 'banana'", "cpu, cuda or cuda:N")),
    "device cuda without a GPU": (lambda t, m: (m.setattr("torch.cuda.is_available", lambda: False),
                                                _run(t, "--device", "cuda"))[1],
                                  ("--device cuda", "no CUDA GPU is visible", "--device cpu")),
    "unknown verb": (lambda t, m: ["plot", SMOKE], ("harness", "invalid choice: 'plot'")),
    "unknown dataset": (lambda t, m: ["dataset", "mnits"], ("unknown dataset 'mnits'", "did you mean 'mnist'")),
    "results directory read-only": (
        lambda t, m: (_read_only(m, t / "results"), _run(t))[1],
        ("results", "results directory is not writable", "Read-only file system", "--results DIR")),
    "cache directory read-only": (
        lambda t, m: (_read_only(m, t / "cache"), _run(t, "--cache", str(t / "cache")))[1],
        ("cache", "cache directory is not writable", "Read-only file system", "--cache DIR")),
    "results directory under a file": (
        lambda t, m: ((t / "file").write_text("x"), _run(t)[:-1] + [str(t / "file" / "run")])[1],
        ("file/run", "results directory is not writable", "--results DIR")),
    "status on a truncated run.json": (
        lambda t, m: ["status", str(_truncate(_report_run(t) / "run.json").parent)],
        ("run.json", "not valid JSON", "damaged")),
    "status on a run.json without its keys": (
        lambda t, m: ["status", str(((t / "r").mkdir(), (t / "r" / "run.json").write_text("{}"), t / "r")[2])],
        ("run.json", "lacks key(s) shard_size, cells")),
    "report on a truncated results.parquet": (
        lambda t, m: ["report", str(_truncate(_report_run(t) / "results.parquet").parent)],
        ("results.parquet", "cannot read the results table", "damaged")),
    "report on a truncated run.json": (
        lambda t, m: ["report", str(_truncate(_report_run(t) / "run.json").parent)],
        ("run.json", "run record is damaged")),
    "report into a read-only directory": (
        lambda t, m: (_read_only(m, t / "run"), ["report", str(_report_run(t))])[1],
        ("run", "report directory is not writable", "Read-only file system", "--out DIR")),
    "report where a file must go is a directory": (
        lambda t, m: (_report_run(t), (t / "run" / "leaderboard.md").mkdir(), ["report", str(t / "run")])[2],
        ("harness report", "leaderboard.md", "Is a directory")),
    "slurm without Slurm": (
        lambda t, m: (_fake_slurm(t, m, srun=False), _run(t)[:-4] + ["--executor", "slurm", "--profile", "ci",
                                                                     "--results", str(t / "results")])[1],
        ("--executor slurm", "srun", "--executor local")),
    "sbatch fails": (
        lambda t, m: (_fake_slurm(t, m, srun=True), _run(t)[:-4] + ["--executor", "slurm", "--profile", "ci",
                                                                    "--results", str(t / "results")])[1],
        ("sbatch failed for generate", "profile", "ci.yaml", "Invalid account")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_user_error_is_one_line_before_compute(name, tmp_path, monkeypatch, capsys):
    setup, fragments = CASES[name]
    argv = setup(tmp_path, monkeypatch)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse-level errors exit from the parser
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("sbatch: ")]  # sbatch's own stderr, passed through
    assert code == 2, (code, err)
    assert len(err) == 1 and err[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err[0], (fragment, err[0])
    assert not list(tmp_path.glob("results/cells/*/images/*.png")), "nothing may be generated"


def test_a_closed_pipe_ends_quietly(tmp_path):
    """``harness plan smoke | head -1``: the reader goes away; no traceback, the shell's SIGPIPE status."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "plan", SMOKE], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141, err
    assert err == "", err


def test_plan_warns_on_a_sweep_absurd_for_the_machine(capsys):
    assert main(["plan", SMOKE, "--set", "n=1000000", "--set", "shard_size=1"]) == 0
    err = capsys.readouterr().err
    assert "warning: 4,000,000 samples in 4 cells (n = 1,000,000 per cell)" in err
    assert "warning: 4,000,000 shards (shard_size 1) is more than 50,000" in err
    assert "refuses more than 20,000,000 samples or 500,000 shards without --allow-large" in err
    assert main(["plan", SMOKE]) == 0 and "warning" not in capsys.readouterr().err


def test_allow_large_lets_the_size_check_pass(tmp_path, monkeypatch):
    """--allow-large is the confirmation: the size check passes and the run goes on to its next check."""
    from harness.errors import HarnessError
    from harness.plan.cost import LIMIT_SHARDS, check_plan_size
    from harness.plan.protocol import load_protocol, make_plan

    plan = make_plan(load_protocol(SMOKE, ["n=1000000", "shard_size=1"]))
    assert sum(plan.shard_count(c) for c in plan.cells) > LIMIT_SHARDS
    with pytest.raises(HarnessError, match="--allow-large"):
        check_plan_size(plan, allow_large=False)
    check_plan_size(plan, allow_large=True)
    check_plan_size(make_plan(load_protocol(SMOKE)), allow_large=False)


def test_report_with_a_corrupt_png_names_it_and_leaves_that_cell_out_of_the_grid(tmp_path, capsys):
    run = make_run(tmp_path / "run", sweep_cells(), images=2)
    bad = run / "cells" / "multi-4-3" / "images" / "0000001.png"
    bad.write_bytes(bad.read_bytes()[:40])
    assert main(["report", str(run)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"warning: {bad}: unreadable PNG" in err and "multi-4-3 left out of the image grid" in err
    assert (run / "plots" / "grid_ds.png").is_file() and (run / "index.html").is_file()
