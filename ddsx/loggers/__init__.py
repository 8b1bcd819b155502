"""Experiment loggers of ddsx runs: W&B runs labelled for comparison across a sweep, and their closing."""

from ddsx.loggers.closing import close_loggers, closed_after

__all__ = ["close_loggers", "closed_after"]
