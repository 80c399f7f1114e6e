"""One-file plugins (a dataset, an extractor, a metric, an executor) registered only by their own decorators:
tests/core/test_plugins.py proves adding each kind needs its one file and no edit anywhere else."""
