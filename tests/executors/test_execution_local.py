"""The local executor with real worker processes: GPU pinning per worker, bounded workers, and a worker that
dies (SIGKILL, segfault, os._exit) — its task is re-run once, a second death is an error naming the task."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.executors import make_executor
from harness.executors.base import LocalExecutor, WorkerCrashError, exit_description, visible_gpus


@dataclass(frozen=True)
class Job:
    """A task descriptor labelled like a shard (cell/start-stop), so errors name it like one."""

    cell_dir: str
    start: int
    stop: int
    mode: str = "ok"  # ok | kill_once | segv_once | kill_always | exit_always | raise
    sleep_s: float = 0.0

    @property
    def label(self) -> str:
        return f"{Path(self.cell_dir).name}/{self.start:07d}-{self.stop:07d}"


def attempts(job: Job) -> list[str]:
    path = Path(job.cell_dir) / f"attempts-{job.start}"
    return path.read_text().split() if path.exists() else []


def run_job(job: Job) -> tuple[int, str, int]:
    """Logs the attempt, then behaves as ``job.mode`` says; returns (start², CUDA_VISIBLE_DEVICES seen, pid)."""
    with open(Path(job.cell_dir) / f"attempts-{job.start}", "a") as f:
        f.write(f"{os.getpid()}\n")
    first = len(attempts(job)) == 1
    time.sleep(job.sleep_s)
    if job.mode == "kill_always" or (job.mode == "kill_once" and first):
        os.kill(os.getpid(), signal.SIGKILL)
    if job.mode == "segv_once" and first:
        ctypes.string_at(0)  # a real segmentation fault
    if job.mode == "exit_always":
        os._exit(3)
    if job.mode == "raise":
        raise ValueError(f"task {job.start} failed")
    return job.start ** 2, os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"), os.getpid()


def jobs(tmp_path: Path, n: int, special: dict[int, str] | None = None, sleep_s: float = 0.0) -> list[Job]:
    cell = tmp_path / "cell"
    cell.mkdir(exist_ok=True)
    return [Job(str(cell), i, i + 1, (special or {}).get(i, "ok"), sleep_s) for i in range(n)]


def test_visible_gpus_reads_cuda_visible_devices(monkeypatch):
    for value, expected in (("0,1", ["0", "1"]), (" 2 , 7 ", ["2", "7"]), ("", []), ("-1", []),
                            ("1,-1,2", ["1"]), ("GPU-5f1c,GPU-77ab", ["GPU-5f1c", "GPU-77ab"])):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
        assert visible_gpus() == expected, value


def test_one_worker_per_visible_gpu_each_pinned_to_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    ex = LocalExecutor()
    assert ex.workers == 2 and ex.gpus == ["3", "5"]
    try:
        out = ex.map(run_job, jobs(tmp_path, 6, sleep_s=0.4), "pin")
    finally:
        ex.close()
    assert [r[0] for r in out] == [i * i for i in range(6)]
    seen_by_pid: dict[int, set[str]] = {}
    for _, seen, pid in out:
        seen_by_pid.setdefault(pid, set()).add(seen)
    assert len(seen_by_pid) == 2, seen_by_pid  # two worker processes, no more
    assert sorted(s for values in seen_by_pid.values() for s in values) == ["3", "5"]  # one GPU each


def test_an_explicit_cuda_device_is_not_repinned(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert make_executor("local", None, "cuda").gpus == ["0", "1"]
    explicit = make_executor("local", 3, "cuda:1")
    assert explicit.gpus == [] and explicit.workers == 3


def test_workers_bound_concurrency_below_the_gpu_count(tmp_path):
    ex = LocalExecutor(workers=1, gpus=["7", "9"])
    try:
        out = ex.map(run_job, jobs(tmp_path, 3), "bounded")
    finally:
        ex.close()
    assert {r[1] for r in out} == {"7"} and len({r[2] for r in out}) == 1


@pytest.mark.parametrize("mode", ["kill_once", "segv_once"])
def test_a_task_that_kills_its_worker_once_is_rerun_and_nothing_else_is_lost(tmp_path, mode, capsys):
    work = jobs(tmp_path, 6, {2: mode}, sleep_s=0.2)
    ex = LocalExecutor(workers=2, gpus=[])
    try:
        out = ex.map(run_job, work, "generate")
    finally:
        ex.close()
    assert [r[0] for r in out] == [i * i for i in range(6)]  # every result, in task order
    tries = attempts(work[2])
    assert len(tries) == 2 and tries[0] != tries[1]  # died once, then ran in a fresh process
    assert all(1 <= len(attempts(j)) <= 2 for j in work)  # at most the co-running task ran twice
    assert "cell/0000002-0000003" in ex.crashes[0]
    assert "a worker process died" in capsys.readouterr().out


@pytest.mark.parametrize("mode, exit_", [("kill_always", "killed by SIGKILL"), ("exit_always", "exit status 3")])
def test_a_second_crash_of_the_same_task_names_the_task_and_the_exit(tmp_path, mode, exit_):
    work = jobs(tmp_path, 3, {1: mode})
    ex = LocalExecutor(workers=2, gpus=[])
    try:
        with pytest.raises(WorkerCrashError) as err:
            ex.map(run_job, work, "generate")
    finally:
        ex.close()
    message = str(err.value)
    assert "task cell/0000001-0000002 crashed its worker twice" in message and exit_ in message
    assert len(attempts(work[1])) == 2  # once in the pool, once alone: never a third time
    assert all(len(attempts(j)) >= 1 for j in work)


def test_an_ordinary_exception_is_raised_at_once_not_retried(tmp_path):
    work = jobs(tmp_path, 2, {0: "raise"})
    ex = LocalExecutor(workers=1, gpus=[])
    try:
        with pytest.raises(ValueError, match="task 0 failed"):
            ex.map(run_job, work, "generate")
    finally:
        ex.close()
    assert len(attempts(work[0])) == 1


def test_exit_descriptions():
    assert exit_description(-9) == "killed by SIGKILL" and exit_description(-11) == "killed by SIGSEGV"
    assert exit_description(3) == "exit status 3"
