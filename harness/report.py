"""Compatibility shim: the reports live in the ``harness.reports`` package."""

from harness.reports import read_results, rows_to_frame, write_parquet, write_report
from harness.reports.tables import leaderboard_markdown

__all__ = ["leaderboard_markdown", "read_results", "rows_to_frame", "write_parquet", "write_report"]
