"""Executors: how a list of picklable tasks gets run (in process, local worker processes, Slurm arrays)."""
