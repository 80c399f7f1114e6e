"""onestep-bench: fair benchmarking of one-step and multi-step image generators."""

__version__ = "0.1.0"

# Bumped whenever a change alters which pixels a cell produces (seed derivation, noise layout,
# PNG encoding). It is part of every cell id, so old images are never reused under new rules.
SAMPLING_VERSION = 1
