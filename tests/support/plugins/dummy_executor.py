"""An executor plugin: each stage's tasks in reverse order on a thread pool (results still in task order)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from harness.executors import register_executor
from harness.executors.base import Executor


@register_executor("plugin-reverse")
class ReverseThreads(Executor):
    name = "plugin-reverse"

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], desc: str) -> list[Any]:
        with ThreadPoolExecutor(2) as pool:
            futures = {i: pool.submit(fn, tasks[i]) for i in reversed(range(len(tasks)))}
            return [futures[i].result() for i in range(len(tasks))]
