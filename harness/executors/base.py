"""The executor interface (stages of tasks), and the in-process (debug) and local worker-process executors.

A run hands every executor the same list of :class:`Stage` objects, built once from the plan
(harness/run/stages.py). ``debug`` runs them in this process (breakpoints work), ``local`` in a bounded
process pool, both through ``map``; the Slurm executor (harness/executors/slurm.py) packs each stage's
tasks into job arrays chained by dependencies. All call the very same task functions, so anything that
passes under one passes under the others.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from tqdm import tqdm

from harness.errors import HarnessError
from harness.executors import ExecutorOptions, register_executor

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Stage:
    """One stage of a run: tasks that may run in any order, once the stages named in ``after`` ended.

    ``weights[i]`` (optional) is task i's estimated cost in ``weight_unit`` ("seconds" or "images"), and
    tasks of different ``groups`` never share a packed job: executors that pack tasks (Slurm) use both; the
    others ignore them. ``inline``: map-based executors call ``fn`` in this process (the collect stage:
    scoring and the report read files every earlier stage wrote); ``serial``: its tasks never overlap (the cost
    stage's timings), so map-based executors run them here one by one and Slurm packs them into one job.
    ``summary(results)``, when given, is a
    line printed after the stage ran here (executors that return before the work ends skip it)."""

    name: str
    fn: Callable[[Any], Any]
    tasks: tuple[Any, ...]
    after: tuple[str, ...] = ()
    weights: tuple[float | None, ...] | None = None
    weight_unit: str = "seconds"
    groups: tuple[str, ...] | None = None
    inline: bool = False
    summary: Callable[[list[Any]], str] | None = None
    serial: bool = False  # its tasks must not run at the same time (timings): one after another, in one process
    done: int = 0  # work items of this stage already complete (not in ``tasks``), for progress messages
    noun: str = "tasks"  # what one task is, in messages ("shards")


class Executor(ABC):
    name: str = ""
    returns_at_submission: bool = False  # True: run_stages hands the work to a scheduler and returns at once

    @classmethod
    def from_options(cls, options: ExecutorOptions) -> Executor:
        """The executor ``harness run --executor NAME`` builds from the command line's options."""
        return cls()

    @abstractmethod
    def map(self, fn: Callable[[T], R], tasks: Sequence[T], desc: str) -> list[R]:
        """Run ``fn`` on every task; results in task order. The first failure stops the run."""

    def run_stages(self, stages: Sequence[Stage]) -> dict[str, list[Any]]:
        """Run the stages in order (their ``after`` lists only name earlier stages); stage name → results."""
        results: dict[str, list[Any]] = {}
        for stage in stages:
            if not stage.tasks:
                continue
            tasks = list(stage.tasks)
            alone = stage.inline or stage.serial  # serial: in this process, one task after another
            results[stage.name] = [stage.fn(t) for t in tasks] if alone else self.map(stage.fn, tasks, stage.name)
            if stage.summary is not None:
                print(stage.summary(results[stage.name]), flush=True)
        return results

    def close(self) -> None:  # noqa: B027 - optional hook: only pooled executors hold resources
        """Release workers; a no-op for in-process executors."""


def _progress(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="task", dynamic_ncols=True, leave=True,
                disable=total == 0 or os.environ.get("HARNESS_PROGRESS", "1") == "0")


@register_executor("debug")
class DebugExecutor(Executor):
    name = "debug"

    def map(self, fn: Callable[[T], R], tasks: Sequence[T], desc: str) -> list[R]:
        results = []
        with _progress(len(tasks), desc) as bar:
            for task in tasks:
                results.append(fn(task))
                bar.update(1)
        return results


def describe(task: Any) -> str:
    """A stable, human-readable name of a work item for logs, jobs.jsonl and error messages: the task's own
    ``label`` (every stage task has one), a bundle's first part, else the task's type."""
    parts = getattr(task, "parts", None)
    if parts:
        return describe(parts[0]) + (f" (+{len(parts) - 1} more)" if len(parts) > 1 else "")
    return str(getattr(task, "label", type(task).__name__))


def work_items(task: Any) -> list[str]:
    """The work items one task descriptor covers: each part of a bundle, else the task itself."""
    parts = getattr(task, "parts", None)
    return [describe(s) for s in parts] if parts is not None else [describe(task)]


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set (ids or UUIDs), else every CUDA device."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [g.strip() for g in env.split(",") if g.strip()]
        # CUDA stops at the first invalid id; "-1" is the usual way of hiding every GPU.
        return ids[:ids.index("-1")] if "-1" in ids else ids
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


# Worker-side state, set by the pool initializer: which tasks this worker started (for crash attribution).
_STARTED: Any = None


def _init_worker(threads: int, gpu_ids: Any, started: Any) -> None:
    global _STARTED
    if gpu_ids is not None:
        # Before any CUDA call: each worker takes one GPU of the pool's and sees only that one (as cuda:0).
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_ids.get()
    _STARTED = started
    import torch

    torch.set_num_threads(threads)


def _tracked(fn: Callable[[T], R], index: int, task: T) -> R:
    _STARTED.put(index)  # a SimpleQueue write is synchronous: it is in the pipe before the task can crash
    return fn(task)


def _isolated_child(fn: Callable[[T], R], task: T, conn: Any, gpu: str | None, threads: int) -> None:
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    import torch

    torch.set_num_threads(threads)
    try:
        conn.send((True, fn(task)))
    except BaseException as e:  # noqa: BLE001 - handed to the parent, which re-raises it
        conn.send((False, e))


def exit_description(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class WorkerCrashError(HarnessError):
    """A task killed its worker process (segfault, SIGKILL, os._exit) on its re-run too."""


@register_executor("local")
class LocalExecutor(Executor):
    """A process pool of at most ``workers`` processes; each keeps its loaded models between tasks.

    With GPUs visible there is one worker per GPU by default, each pinned to its own GPU through
    CUDA_VISIBLE_DEVICES (more workers than GPUs share them round-robin). A task whose worker dies is
    re-run once, alone, in a fresh process; if it kills that one too the run stops with a
    :class:`WorkerCrashError` naming the task and the exit. Results of the other tasks are kept."""

    name = "local"

    def __init__(self, workers: int | None = None, gpus: Sequence[str] | None = None) -> None:
        cpus = os.cpu_count() or 1
        self.gpus = list(visible_gpus() if gpus is None else gpus)
        self.workers = max(1, workers or (len(self.gpus) or min(2, cpus)))
        self.threads = max(1, cpus // self.workers)
        self.crashes: list[str] = []  # "task: exit" of every worker death seen, for the run's log
        self._pool: ProcessPoolExecutor | None = None
        self._started: Any = None

    @classmethod
    def from_options(cls, options: ExecutorOptions) -> LocalExecutor:
        # "--device cuda:N" names one GPU itself: pinning workers to others would hide it from them.
        return cls(options.workers, gpus=[] if options.device.startswith("cuda:") else None)

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: forking a process that already ran torch threads can deadlock.
            ctx = mp.get_context("spawn")
            gpu_ids = None
            if self.gpus:
                gpu_ids = ctx.SimpleQueue()
                for i in range(self.workers):
                    gpu_ids.put(self.gpus[i % len(self.gpus)])
            self._started = ctx.SimpleQueue()
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                             initargs=(self.threads, gpu_ids, self._started))
        return self._pool

    def _drop_broken_pool(self) -> set[int]:
        """Shut the broken pool down; returns the indices of the tasks its workers had started."""
        started = set()
        while not self._started.empty():
            started.add(self._started.get())
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None
        return started

    def _run_pooled(self, fn: Callable[[T], R], tasks: Sequence[T], todo: list[int], results: list[Any],
                    bar: tqdm) -> set[int]:
        """Run ``todo`` in the pool, filling ``results``; returns the indices still to do after a worker died
        (empty when all finished). A task raising an exception stops the run, as under every executor."""
        pool = self._get_pool()
        futures = {pool.submit(_tracked, fn, i, tasks[i]): i for i in todo}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                if isinstance(fut.exception(), BrokenProcessPool):
                    continue
                if fut.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise fut.exception()
                results[futures[fut]] = fut.result()
                bar.update(1)
        return {i for f, i in futures.items() if isinstance(f.exception(), BrokenProcessPool)}

    def _run_alone(self, fn: Callable[[T], R], task: T) -> R:
        """One task in a fresh process of its own, so a second crash is attributed to it beyond doubt."""
        ctx = mp.get_context("spawn")
        receive, send = ctx.Pipe(duplex=False)
        gpu = self.gpus[0] if self.gpus else None
        proc = ctx.Process(target=_isolated_child, args=(fn, task, send, gpu, self.threads))
        proc.start()
        send.close()
        try:
            ok, value = receive.recv()
        except EOFError:  # the child died without answering
            proc.join()
            exit_ = exit_description(proc.exitcode)
            self.crashes.append(f"{describe(task)}: {exit_}")
            raise WorkerCrashError(f"task {describe(task)} crashed its worker twice, the second time alone in a "
                                   f"fresh process ({exit_}); the other tasks' results are kept. Run it with "
                                   f"--executor debug to see where it dies") from None
        proc.join()
        if not ok:
            raise value
        return value

    def map(self, fn: Callable[[T], R], tasks: Sequence[T], desc: str) -> list[R]:
        if not tasks:
            return []
        results: list[Any] = [None] * len(tasks)
        todo, suspects = list(range(len(tasks))), set()
        with _progress(len(tasks), desc) as bar:
            while todo:
                unfinished = self._run_pooled(fn, tasks, todo, results, bar)
                if not unfinished:
                    break
                started = self._drop_broken_pool() & unfinished
                if not started:  # died before starting any task: the pool itself cannot run
                    raise WorkerCrashError(f"{desc}: a worker process died before running any task")
                suspects |= started
                self.crashes.append(f"{', '.join(describe(tasks[i]) for i in sorted(started))}: worker died")
                print(f"{desc}: a worker process died running {len(started)} task(s); re-running "
                      f"them one at a time in fresh processes, the other {len(unfinished - started)} in a "
                      f"fresh pool", flush=True)
                todo = sorted(unfinished - suspects)
            for i in sorted(suspects):  # the tasks running when a worker died: once more each, alone
                results[i] = self._run_alone(fn, tasks[i])
                bar.update(1)
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
