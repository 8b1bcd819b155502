"""Close a job's experiment loggers, also when the job failed.

In a multirun, jobs of the basic and joblib launchers share a process: a W&B run left open by one job
would be picked up by the next (Lightning's WandbLogger reuses ``wandb.run``), mixing two jobs' metrics
in one run id. Every job therefore finishes its W&B run, with exit code 1 when it failed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from lightning.pytorch.loggers import WandbLogger

from ddsx.loggers.wandb import finish_wandb_run
from ddsx.utils.logging import get_logger

log = get_logger(__name__)


@contextlib.contextmanager
def closed_after(loggers: Iterable[object]) -> Iterator[None]:
    """Run the block, then close ``loggers``: as failed if it raised (the error goes on), else as success."""
    loggers = list(loggers)
    try:
        yield
    except BaseException:
        close_loggers(loggers, failed=True)
        raise
    close_loggers(loggers, failed=False)


def close_loggers(loggers: Iterable[object], failed: bool) -> None:
    """Finalize every logger and finish the W&B runs they started; never raises (a job's own error wins)."""
    for logger in loggers:
        try:
            finalize = getattr(logger, "finalize", None)
            if finalize is not None:
                finalize("failed" if failed else "success")
            if isinstance(logger, WandbLogger):
                finish_wandb_run(failed)
        except Exception as error:  # closing must not hide why the job failed
            log.warning("could not close logger %s: %s", type(logger).__name__, error)
