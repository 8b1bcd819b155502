"""Send a finished ddsx-analyze run to experiment loggers: its plots, image grids and table to W&B."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ddsx.loggers.wandb import wandb_loggers


def log_analysis(
    loggers: Sequence[object], table: Path, plots: Sequence[Path], grids: Sequence[Path]
) -> None:
    """Flush every logger's metrics; to each W&B logger also the plots and grids (images) and the table
    file. Other loggers already got the metrics, one step per sigma."""
    for logger in loggers:
        if hasattr(logger, "save"):
            logger.save()
    for logger in wandb_loggers(loggers):
        import wandb

        experiment = logger.experiment
        experiment.log(
            {f"analyze/plots/{p.stem}": wandb.Image(str(p)) for p in plots}
            | {f"analyze/grids/{g.stem}": wandb.Image(str(g)) for g in grids}
        )
        experiment.save(str(table), base_path=str(table.parent), policy="now")
