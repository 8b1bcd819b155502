"""Experiment loggers of ddsx runs, all in this package:

- wandb.py: the W&B logger (sweep groups, tags, the config under dotted keys) and its run's finish;
- csv.py: a CSV metrics logger on Lightning's public Logger, resumable (a resumed run appends to metrics.csv);
- certification.py, analysis.py: what a finished certification or analysis sends to the loggers;
- closing.py: every job closes its loggers, also when it failed.
"""

from ddsx.loggers.closing import close_loggers, closed_after

__all__ = ["close_loggers", "closed_after"]
