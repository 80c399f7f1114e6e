"""The ``harness`` command line: one module per verb group, ``main`` dispatches (see docs/architecture.md)."""

from harness.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
