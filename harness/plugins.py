"""Plugins outside the package: modules that register metrics, extractors, datasets, executors or families.

A plugin is one importable module whose classes carry the registry decorators (``register_metric``,
``register_extractor``, ``register_dataset``, ``register_executor``, ``register`` for model families).
Name it in ``$HARNESS_PLUGINS`` (comma-separated module names) or as an ``onestep_bench.plugins`` entry
point of an installed package; registries load plugins the first time a name is not found, so the CLI,
the Python API and worker processes (which inherit the environment) all see the same registry.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os

from harness.errors import HarnessError

_LOADED: set[str] = set()


def load_plugins() -> list[str]:
    """Import every plugin module not imported yet; returns the names imported now."""
    names = [m.strip() for m in os.environ.get("HARNESS_PLUGINS", "").split(",") if m.strip()]
    new = []
    for name in names:
        if name in _LOADED:
            continue
        _LOADED.add(name)
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise HarnessError(f"HARNESS_PLUGINS: cannot import plugin module {name!r}: {e}") from None
        new.append(name)
    for ep in importlib.metadata.entry_points(group="onestep_bench.plugins"):
        if ep.value not in _LOADED:
            _LOADED.add(ep.value)
            ep.load()
            new.append(ep.value)
    return new
