"""Executors: where a run's stages of picklable tasks run (in process, local worker processes, Slurm job arrays).

The registry is ``_EXECUTORS`` below (the names ``harness run --executor`` accepts). Adding one:
1. one module with an ``Executor`` subclass (harness/executors/base.py): ``map(fn, tasks, desc)`` returning
   results in task order, and ``from_options(options)`` if it needs more than a bare constructor; override
   ``run_stages`` only to schedule whole stages yourself (as Slurm does with dependent job arrays);
2. for a module of this package, add a ``"name": "module:Class"`` line below so it loads lazily; outside the
   package, decorate the class with ``@register_executor("name")`` in a plugin module (harness/plugins.py);
3. ``tests/executors/test_executor_conformance.py`` checks it gives the parquet the debug executor gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.registry import LazyRegistry

# name -> "module:Class" (relative to this package), imported on first use; or the class once registered
_EXECUTORS: dict[str, Any] = {
    "debug": ".base:DebugExecutor",  # this process, one task after another (breakpoints work)
    "local": ".base:LocalExecutor",  # worker processes, one per GPU
    "slurm": ".slurm:SlurmExecutor",  # job arrays through submitit, chained by dependencies
}
EXECUTORS = tuple(_EXECUTORS)  # the built-in names, for the CLI's --executor choices


@dataclass(frozen=True)
class ExecutorOptions:
    """What ``harness run`` knows when it builds an executor; each executor takes what it needs."""

    workers: int | None = None
    device: str = "cpu"
    run_dir: Path | None = None
    profile: Any = None  # the Slurm profile (harness.executors.slurm_profile.SlurmProfile)
    wait: bool = False  # executors that return at submission: block until the work ended


_REGISTRY = LazyRegistry("executor", __name__, _EXECUTORS)


def register_executor(name: str):
    """Class decorator: ``@register_executor("name")`` makes an ``Executor`` subclass ``--executor name``."""
    return _REGISTRY.register(name)


def available_executors() -> list[str]:
    return _REGISTRY.names()


def executor_class(name: str) -> type:
    """The ``Executor`` subclass registered as ``name`` (harness/executors/base.py)."""
    return _REGISTRY.get_class(name)


def make_executor(name: str, workers: int | None = None, device: str = "cpu", **options: Any) -> Any:
    """The executor called ``name``, built from ``harness run``'s options (``run_dir``, ``profile``, ``wait``)."""
    return executor_class(name).from_options(ExecutorOptions(workers, device, **options))
