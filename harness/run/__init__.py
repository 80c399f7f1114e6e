"""The stages of a run (generate, extract, score) and the runs that chain them on an executor."""
