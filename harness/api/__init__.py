"""The Python API: ``score`` (metrics of images without a protocol), ``run`` (a protocol on the debug or
local executor) and ``load_results`` (a run's tidy table), the same engine the ``harness`` command uses.

Imported lazily (and re-exported by ``harness/__init__.py``): ``import harness`` loads no numpy, torch or
pandas; the first call of a function imports what it needs."""

from __future__ import annotations

from typing import Any

__all__ = ["Run", "load_results", "run", "score"]

_WHERE = {"score": "harness.api.scoring", "run": "harness.api.runs", "Run": "harness.api.runs",
          "load_results": "harness.api.runs"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'harness.api' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_WHERE[name]), name)
