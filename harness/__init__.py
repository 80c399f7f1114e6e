"""onestep-bench: fair benchmarking of one-step and multi-step image generators.

The Python API (harness/api/): ``harness.score(images, reference, metrics=[...])``, ``harness.run(protocol,
results=..., executor=...)``, ``harness.load_results(dir)``; imported on first use, so ``import harness``
stays cheap (no numpy, torch or pandas)."""

import os
import sys
import types

# OpenMP worker threads busy-wait after each torch op by default; on small CPU boxes they then steal
# the cores from the harness's own work between generator calls (PNG encoding, hashing), measured as
# a 3x slower shard writer. Passive waiting costs the generator nothing measurable. Set before torch
# is imported (every entry point imports harness first); an explicit user setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# Bumped whenever a change alters which pixels a cell produces (seed derivation, noise layout,
# PNG encoding). It is part of every cell id, so old images are never reused under new rules.
SAMPLING_VERSION = 2  # 2: generator calls aligned to absolute batches (no padding)


__all__ = ["Run", "load_results", "run", "score"]


def __getattr__(name: str):
    """``harness.score``, ``harness.load_results``, ``harness.Run``: imported on first use."""
    if name in ("score", "load_results", "Run"):
        from harness import api

        return getattr(api, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


class _CallablePackage(types.ModuleType):
    """``harness.run`` is both the stages' package (harness/run/) and the API's ``run(protocol, ...)``: Python
    binds a subpackage to its parent's attribute on import, so a plain function would be replaced by the
    package the first time anything imports ``harness.run.runner``. Calling the package calls the API."""

    def __call__(self, *args, **kwargs):
        from harness.api.runs import run

        return run(*args, **kwargs)


import harness.run  # noqa: E402, F401 - its __init__ is a docstring: cheap; imported to make it callable

sys.modules["harness.run"].__class__ = _CallablePackage
