"""A registry of plugin classes by name: built-ins as lazily imported ``"module:Class"`` strings (listing them
loads no network), plugins as classes their ``register`` decorator adds. Metrics, extractors and executors use
it; a name not found loads the plugin modules (harness/plugins.py) once before it is refused."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from harness.errors import HarnessError
from harness.plugins import load_plugins
from harness.suggest import did_you_mean


class LazyRegistry:
    def __init__(self, kind: str, package: str, entries: dict[str, Any],
                 error: type[HarnessError] = HarnessError) -> None:
        self.kind = kind  # "metric", "extractor", ... in messages
        self.package = package  # what relative "module:Class" strings are imported from
        self.entries = entries  # name -> "module:Class" or a registered class (shared with the owning module)
        self.error = error

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator: ``@registry.register("name")`` makes the class available under ``name``."""
        def wrap(cls: type) -> type:
            self.entries[name] = cls
            return cls
        return wrap

    def names(self) -> list[str]:
        return sorted(self.entries)

    def get_class(self, name: str) -> type:
        """The class registered as ``name``; an unknown name is refused with a did-you-mean and the list."""
        if name not in self.entries:
            load_plugins()
        if name not in self.entries:
            raise self.error(f"unknown {self.kind} {name!r}{did_you_mean(name, self.entries)}; "
                             f"available: {', '.join(self.names())}")
        entry = self.entries[name]
        if isinstance(entry, str):
            module_name, cls_name = entry.split(":")
            entry = getattr(importlib.import_module(module_name, self.package), cls_name)
        return entry
