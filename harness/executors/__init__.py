"""Executors: how a list of picklable tasks gets run (in process, local worker processes, Slurm job arrays).

The registry is ``EXECUTORS`` below (the names ``harness run --executor`` accepts). Adding one: implement
``Executor`` (harness/executors/base.py: ``map(fn, tasks, desc)`` returning results in task order, ``close()``), add
its name here and a branch in ``make_executor``; see docs/architecture.md.
"""

# debug: in this process, one task after another; local: worker processes (one per GPU); slurm: job arrays
EXECUTORS = ("debug", "local", "slurm")
