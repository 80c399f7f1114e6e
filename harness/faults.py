"""Fault-injection hooks for the resume tests; inert unless HARNESS_FAULT / HARNESS_FAULT_DELAY are set.

``HARNESS_FAULT=name:K`` SIGKILLs this process the K-th time point ``name`` is reached.
``HARNESS_FAULT_DELAY=name:S`` sleeps S seconds at every ``name`` (so a Slurm test can catch a task mid-shard).

Points: generation ``after_png``, ``after_journal``, ``before_manifest``; extraction ``after_feature``;
scoring ``after_score``; report ``before_parquet``.
"""

from __future__ import annotations

import os
import signal
import time

POINTS = ("after_png", "after_journal", "before_manifest", "after_feature", "after_score", "before_parquet")

_COUNTS: dict[str, int] = {}


def fault_point(name: str) -> None:
    delay = os.environ.get("HARNESS_FAULT_DELAY", "")
    if delay.startswith(name + ":"):
        time.sleep(float(delay.split(":", 1)[1]))
    spec = os.environ.get("HARNESS_FAULT", "")
    if not spec.startswith(name + ":"):
        return
    count = _COUNTS[name] = _COUNTS.get(name, 0) + 1
    if count == int(spec.split(":", 1)[1]):
        os.kill(os.getpid(), signal.SIGKILL)
