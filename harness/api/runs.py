"""``harness.run`` and ``harness.load_results``: a protocol through plan → stages (generate, reference, extract,
collect) on any registered executor, and a run's tidy table. ``harness run`` is a thin layer over ``run``, so
the API and the command refuse the same inputs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.api.checks import check_device, protocol_path, require_for_metrics
from harness.errors import HarnessError
from harness.executors import executor_class, make_executor
from harness.executors.slurm_profile import load_profile
from harness.plan.cost import check_plan_size
from harness.plan.protocol import Plan, Protocol, load_protocol, make_plan, parse_overrides, protocol_from_dict
from harness.reports import load_runs, read_results, write_results_report
from harness.run.runner import run_plan
from harness.store import default_cache_dir, ensure_writable


def _override_pairs(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    """``--set`` pairs from ``["n=8"]`` or ``{"n": 8}`` (values written as JSON, which YAML reads back)."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        try:
            return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
        except TypeError as e:
            raise HarnessError(f"overrides={dict(overrides)!r}: values must be plain YAML values (numbers, "
                               f"strings, lists, mappings, None): {e}") from None
    if isinstance(overrides, str) or not all(isinstance(p, str) for p in overrides):
        raise HarnessError(f"overrides={overrides!r}: expected a mapping {{key: value}} or a list of "
                           f"'key=value' strings")
    return list(overrides)


def load_plan_protocol(protocol: str | Path | Mapping[str, Any] | Protocol,
                       overrides: Mapping[str, Any] | Sequence[str] | None = None) -> Protocol:
    """A protocol from a file path, a name in protocols/, a mapping of its keys, or a loaded Protocol."""
    pairs = _override_pairs(overrides)
    if isinstance(protocol, Protocol):
        if pairs:
            raise HarnessError("overrides apply to a protocol file, name or mapping, not to a loaded Protocol")
        return protocol
    if isinstance(protocol, Mapping):
        return protocol_from_dict({**protocol, **parse_overrides(pairs)}, source="<protocol mapping>")
    if not isinstance(protocol, (str, Path)):
        raise HarnessError(f"protocol={protocol!r}: expected a protocol file, the name of one in protocols/, or a "
                           f"mapping of protocol keys")
    return load_protocol(protocol_path(protocol), pairs)


def checked_plan(protocol: str | Path | Mapping[str, Any] | Protocol,
                 overrides: Mapping[str, Any] | Sequence[str] | None = None, allow_large: bool = False) -> Plan:
    """The plan, after every check that needs no compute: data present, weights present, size limits."""
    plan = make_plan(load_plan_protocol(protocol, overrides))
    plan.require_data()  # provisional cell ids (a dataset's files absent): refused before anything else
    require_for_metrics(plan.protocol.metrics)  # missing weights: refused before any compute
    check_plan_size(plan, allow_large)  # a typo'd n must not list millions of shards first
    return plan


def run_directories(plan: Plan, results: str | Path | None, cache: str | Path | None) -> tuple[Path, Path]:
    """The run directory (default results/<protocol name>) and the cache, both checked writable."""
    run_dir = Path(results) if results is not None else Path("results") / plan.protocol.name
    cache_dir = Path(cache) if cache is not None else default_cache_dir()
    ensure_writable(run_dir)
    ensure_writable(cache_dir, "cache directory", "--cache DIR (or $HARNESS_CACHE)")
    return run_dir, cache_dir


def load_results(run: str | Path) -> pd.DataFrame:
    """The tidy results of a run directory (or a results.parquet file), schema checked; a missing, damaged or
    foreign table is refused naming the file."""
    path = Path(run)
    return read_results(path.parent, path.name) if path.suffix == ".parquet" else read_results(path)


@dataclass(frozen=True)
class Run:
    """A finished run directory: ``results`` (its tidy table), ``report()`` (leaderboards, plots, html)."""

    dir: Path

    @property
    def results(self) -> pd.DataFrame:
        return load_results(self.dir)

    def report(self, out: str | Path | None = None, mmhm_metrics: Sequence[str] | None = None,
               mmhm_best: str = "rows") -> list[Path]:
        """Write the report (what ``harness report DIR [--out OUT]`` writes) and return the files written."""
        target = Path(out) if out is not None else self.dir
        results = load_runs([self.dir])
        ensure_writable(target, "report directory", "out")  # before anything is written
        ensure_writable(target / "plots", "report plots directory", "out")
        return write_results_report(results, target, mmhm_metrics, None, mmhm_best)


def run(protocol: str | Path | Mapping[str, Any] | Protocol, results: str | Path | None = None,
        executor: str = "local", cache: str | Path | None = None, *, workers: int | None = None,
        device: str = "cpu", overrides: Mapping[str, Any] | Sequence[str] | None = None, extend: bool = False,
        allow_large: bool = False, profile: str | Path | None = None, wait: bool = False) -> Run:
    """Run a protocol (a file, a name in protocols/, or a mapping of its keys) as ``harness run`` does:
    resumes what is done, refuses a directory holding another protocol's run unless ``extend``. ``executor``:
    "debug" (in-process), "local" (a process pool of ``workers``), "slurm" (job arrays under the cluster
    ``profile``; returns at submission unless ``wait``) or one a plugin registers. ``overrides``: ``{"n": 8}``
    or ``["n=8"]`` (``--set``)."""
    executor_class(executor)  # an unknown name is refused before any check or file
    if workers is not None and executor != "local":
        raise HarnessError(f"workers={workers!r} applies to executor='local' only (got executor={executor!r})")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise HarnessError(f"workers={workers!r}: expected an integer >= 1")
    if executor != "slurm" and (profile or wait):
        raise HarnessError(f"profile and wait apply to executor='slurm' only (got executor={executor!r})")
    if executor == "slurm" and not profile:
        raise HarnessError("executor='slurm' needs profile=FILE, a cluster profile YAML or a name in slurm/profiles/ "
                           "(e.g. 'ci'); on the command line: --profile")
    cluster = load_profile(profile) if profile else None  # a bad profile is refused before anything is written
    check_device(device, flag="device", local=executor != "slurm")
    plan = checked_plan(protocol, overrides, allow_large)
    run_dir, cache_dir = run_directories(plan, results, cache)
    options: dict[str, Any] = {}
    if executor == "slurm":  # job folders and scripts name absolute paths: the jobs run elsewhere
        run_dir, cache_dir = run_dir.resolve(), cache_dir.resolve()
        options = {"run_dir": run_dir, "wait": wait, "profile": cluster}
    pool = make_executor(executor, workers, device, **options)
    try:
        run_plan(plan, run_dir, cache_dir, pool, device, extend=extend)
    finally:
        pool.close()
    return Run(run_dir)
