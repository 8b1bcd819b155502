"""Send a finished certification to experiment loggers: ``cert/*`` metrics, W&B table and plot."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ddsx.certification.metrics import metric_names, summarize
from ddsx.certification.results_file import ResultRow
from ddsx.utils.logging import get_logger

log = get_logger(__name__)


def format_summary(summary: dict[str, float], radii: Sequence[float]) -> str:
    """One console line: ``cert acc r=0: 0.812, r=0.25: 0.700, ... | ACR 0.512 | abstain 0.031``."""
    accs = ", ".join(f"r={r:g}: {summary[f'acc@{r:g}']:.3f}" for r in radii)
    return (
        f"certified accuracy {accs} | ACR {summary['acr']:.3f} | abstain {summary['abstain']:.3f} "
        f"| {int(summary['examples'])} examples"
    )


def log_certification(
    loggers: Sequence[object],
    rows: Sequence[ResultRow],
    radii: Sequence[float],
    result_path: Path,
    step: int = 0,
) -> dict[str, float]:
    """Log ``cert/acc@r``, ``cert/acr``, ``cert/abstain`` (+ clean_acc, examples) to every Lightning
    logger; with a WandbLogger also a table of rows, the plot and the result file. Returns the metrics."""
    metrics = metric_names(summarize(rows, radii))
    for logger in loggers:
        logger.log_metrics(metrics, step=step)
        if hasattr(logger, "save"):
            logger.save()  # CSVLogger buffers; after fit it was already finalised once
        if type(logger).__name__ == "WandbLogger":
            _log_to_wandb(logger, rows, result_path)
    return metrics


def _log_to_wandb(logger, rows: Sequence[ResultRow], result_path: Path) -> None:
    import matplotlib.pyplot as plt
    import wandb

    from ddsx.report.plots import plot_certified_accuracy

    columns = list(asdict(rows[0])) if rows else ["idx"]
    table = wandb.Table(columns=columns, data=[list(asdict(r).values()) for r in rows])
    figure = plot_certified_accuracy({result_path.stem: rows})
    experiment = logger.experiment
    experiment.log({"cert/rows": table, "cert/plot": wandb.Image(figure)})
    plt.close(figure)
    try:
        experiment.save(str(result_path), base_path=str(result_path.parent), policy="now")
    except Exception as error:  # the metrics are logged already; a missing file upload is not fatal
        log.warning("could not attach %s to the W&B run: %s", result_path, error)
