"""Cluster profiles (``slurm/profiles/*.yaml``): where and how array tasks run, kept out of code.

A profile is validated completely before anything is submitted; every error names the file, the key, the
value and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError

PROFILES_DIR = Path(__file__).resolve().parents[2] / "slurm" / "profiles"


@dataclass(frozen=True)
class SlurmProfile:
    name: str
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    mem_gb: float = 4
    time_min: int = 60  # per array task; a timed-out task is requeued (max_num_timeout times) and resumes
    setup: tuple[str, ...] = ()  # shell lines before the task: module loads, env activation
    max_array_size: int = 1001  # the site's MaxArraySize (`scontrol show config`): indices stay below it
    array_parallelism: int = 64  # array tasks running at once, per array
    collect_time_min: int | None = None  # the one collect job (score + report a whole run); default time_min
    extract_time_min: int | None = None  # each feature-extraction array task; default time_min
    # Shards are bundled into array tasks of about this many minutes of estimated generation (harness.plan.cost),
    # never more than time_min minus signal_delay_s; shards of unknown cost get one task each.
    task_target_min: int = 30
    # Extraction and reference array tasks take consecutive shards (chunks) of one extractor set up to this many images.
    extract_images_per_task: int = 20000
    signal_delay_s: int = 120  # USR2 this long before the time limit: checkpoint, then requeue
    max_num_timeout: int = 3
    extra_sbatch: dict[str, Any] = field(default_factory=dict)  # merged last into the #SBATCH header
    source: str = ""

    def submitit_parameters(self) -> dict[str, Any]:
        """Keyword arguments for ``submitit.SlurmExecutor.update_parameters``."""
        params: dict[str, Any] = {
            "time": self.time_min, "cpus_per_task": self.cpus_per_task, "mem": f"{int(self.mem_gb * 1024)}MB",
            "setup": list(self.setup), "array_parallelism": self.array_parallelism,
            "signal_delay_s": self.signal_delay_s, "job_name": "harness",
        }
        for key in ("partition", "account", "qos"):
            if getattr(self, key) is not None:
                params[key] = getattr(self, key)
        if self.gpus_per_task:
            params["gpus_per_task"] = self.gpus_per_task
        if self.extra_sbatch:
            params["additional_parameters"] = dict(self.extra_sbatch)
        return params


_INT_KEYS = {"gpus_per_task": 0, "cpus_per_task": 1, "time_min": 1, "collect_time_min": 1, "extract_time_min": 1,
             "task_target_min": 1,
             "max_array_size": 2, "array_parallelism": 1, "signal_delay_s": 0, "extract_images_per_task": 1,
             "max_num_timeout": 0}  # key → smallest allowed value
_STR_KEYS = ("name", "partition", "account", "qos")


def _check(path: Path, key: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise HarnessError(f"{path}: {key}: {value!r} is not valid; expected {expected}")


def parse_profile(raw: Any, path: Path) -> SlurmProfile:
    if not isinstance(raw, dict):
        raise HarnessError(f"{path}: a profile is a YAML mapping of keys (partition, time_min, ...); "
                           f"got {type(raw).__name__}")
    known = [f.name for f in fields(SlurmProfile) if f.name != "source"]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise HarnessError(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(known)}")
    values = dict(raw)
    values.setdefault("name", path.stem)
    for key in _STR_KEYS:
        if key in values and values[key] is not None:
            _check(path, key, values[key], isinstance(values[key], str) and values[key].strip() != "",
                   "a non-empty string (or null)")
    for key, least in _INT_KEYS.items():
        if values.get(key) is not None:
            v = values[key]
            _check(path, key, v, isinstance(v, int) and not isinstance(v, bool) and v >= least,
                   f"an integer >= {least}")
    if "mem_gb" in values:
        v = values["mem_gb"]
        _check(path, "mem_gb", v, isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
               "a positive number of GiB")
    setup = values.get("setup", [])
    _check(path, "setup", setup, isinstance(setup, list) and all(isinstance(s, str) for s in setup),
           "a list of shell lines, e.g. ['module load cuda/12.1', 'source ~/venv/bin/activate']")
    values["setup"] = tuple(setup)
    extra = values.get("extra_sbatch", {}) or {}
    _check(path, "extra_sbatch", extra, isinstance(extra, dict) and all(isinstance(k, str) for k in extra),
           "a mapping of sbatch option → value, e.g. {constraint: a100, reservation: eval}")
    for reserved in ("array", "dependency", "signal", "time"):
        _check(path, f"extra_sbatch.{reserved}", extra.get(reserved), reserved not in extra,
               f"not set here: the harness sets --{reserved} itself (use the profile's own keys)")
    values["extra_sbatch"] = dict(extra)
    delay = values.get("signal_delay_s", SlurmProfile.signal_delay_s)
    for key in ("time_min", "collect_time_min", "extract_time_min"):
        limit = values.get(key) or values.get("time_min", SlurmProfile.time_min)
        _check(path, "signal_delay_s", delay, delay < limit * 60,
               f"less than {key} × 60 = {limit * 60} s, or jobs are signalled as soon as they start")
    return SlurmProfile(**values, source=str(path))


def task_budget_s(profile: SlurmProfile) -> float:
    """The estimated seconds one generation array task may be given: the target, capped below the time limit
    (a task must end before it is signalled to checkpoint, ``signal_delay_s`` before the limit)."""
    return float(min(profile.task_target_min * 60, profile.time_min * 60 - profile.signal_delay_s))


def load_profile(arg: str | Path) -> SlurmProfile:
    """A profile file, or the name of one in slurm/profiles/."""
    path = Path(arg)
    if not path.exists() and (PROFILES_DIR / f"{arg}.yaml").exists():
        path = PROFILES_DIR / f"{arg}.yaml"
    if not path.exists():
        available = ", ".join(p.stem for p in sorted(PROFILES_DIR.glob("*.yaml")))
        raise HarnessError(f"{path}: no such Slurm profile; pass a file or one of: {available}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise HarnessError(f"{path}: not valid YAML ({e})") from None
    return parse_profile(raw, path)
