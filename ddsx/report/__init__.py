"""Reports from certification files: tables (markdown, LaTeX), the best-over-sigma envelope, plots."""

from ddsx.report.runs import BadFile, Run, envelope_groups, find_result_files, load_run, load_runs
from ddsx.report.tables import (
    compare_table,
    envelope_curve,
    envelope_table,
    summary_table,
    to_latex,
    to_markdown,
)

__all__ = [
    "BadFile",
    "Run",
    "compare_table",
    "envelope_curve",
    "envelope_groups",
    "envelope_table",
    "find_result_files",
    "load_run",
    "load_runs",
    "summary_table",
    "to_latex",
    "to_markdown",
]
