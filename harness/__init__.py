"""onestep-bench: fair benchmarking of one-step and multi-step image generators."""

import os

# OpenMP worker threads busy-wait after each torch op by default; on small CPU boxes they then steal
# the cores from the harness's own work between generator calls (PNG encoding, hashing), measured as
# a 3x slower shard writer. Passive waiting costs the generator nothing measurable. Set before torch
# is imported (every entry point imports harness first); an explicit user setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# Bumped whenever a change alters which pixels a cell produces (seed derivation, noise layout,
# PNG encoding). It is part of every cell id, so old images are never reused under new rules.
SAMPLING_VERSION = 2  # 2: generator calls aligned to absolute batches (no padding)
