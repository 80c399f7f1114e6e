"""Executors: run one task function over picklable task descriptors.

``debug`` runs in this process (breakpoints work); ``local`` runs a bounded process pool. Both call the
very same task functions, so anything that passes under one passes under the other. The Slurm
executor (issue 6) plugs in behind the same ``map`` signature.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, TypeVar

from tqdm import tqdm

from .errors import HarnessError

T = TypeVar("T")
R = TypeVar("R")


class Executor(ABC):
    name: str = ""

    @abstractmethod
    def map(self, fn: Callable[[T], R], tasks: Sequence[T], desc: str) -> list[R]:
        """Run ``fn`` on every task; results in task order. The first failure stops the run."""

    def close(self) -> None:  # noqa: B027 - optional hook: only pooled executors hold resources
        """Release workers; a no-op for in-process executors."""


def _progress(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="task", dynamic_ncols=True, leave=True,
                disable=total == 0 or os.environ.get("HARNESS_PROGRESS", "1") == "0")


class DebugExecutor(Executor):
    name = "debug"

    def map(self, fn: Callable[[T], R], tasks: Sequence[T], desc: str) -> list[R]:
        results = []
        with _progress(len(tasks), desc) as bar:
            for task in tasks:
                results.append(fn(task))
                bar.update(1)
        return results


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class LocalExecutor(Executor):
    """A process pool with at most ``workers`` processes; each keeps its loaded models between tasks."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        cpus = os.cpu_count() or 1
        self.workers = max(1, workers or min(2, cpus))
        self.threads = max(1, cpus // self.workers)
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: forking a process that already ran torch threads can deadlock.
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_init_worker, initargs=(self.threads,))
        return self._pool

    def map(self, fn: Callable[[T], R], tasks: Sequence[T], desc: str) -> list[R]:
        if not tasks:
            return []
        pool = self._get_pool()
        futures = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
        results: list[Any] = [None] * len(tasks)
        pending = set(futures)
        with _progress(len(tasks), desc) as bar:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    if fut.exception() is not None:
                        for other in pending:
                            other.cancel()
                        raise fut.exception()
                    results[futures[fut]] = fut.result()
                    bar.update(1)
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


EXECUTORS = ("debug", "local", "slurm")


def make_executor(name: str, workers: int | None = None, device: str = "cpu") -> Executor:
    if name == "debug":
        return DebugExecutor()
    if name == "local":
        return LocalExecutor(workers)
    if name == "slurm":
        raise HarnessError("the Slurm executor needs a profile and a run directory: use "
                           "`harness run --executor slurm --profile NAME` (harness.slurm_run.submit_plan)")
    raise HarnessError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
