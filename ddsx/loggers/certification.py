"""Send a finished certification to experiment loggers: ``cert/*`` metrics, W&B table and plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ddsx.certification.metrics import Tally, metric_names, radius_key, summarize
from ddsx.certification.result_file import ResultRow
from ddsx.loggers.wandb import wandb_loggers
from ddsx.utils.logging import get_logger

log = get_logger(__name__)


def log_certification(
    loggers: Sequence[object],
    rows: Sequence[ResultRow],
    radii: Sequence[float],
    result_path: Path,
    step: int = 0,
    prefix: str = "cert/",
    max_radius: float | None = None,
) -> dict[str, float]:
    """Log ``cert/acc@r``, ``cert/acr``, ``cert/abstain`` (+ clean_acc, examples, samples_mean: noisy
    copies per example after the n0 selection) to every Lightning logger; with a WandbLogger also a table
    of rows, the plot and the result file. Returns the metrics.

    ``max_radius``: the largest radius n and alpha can certify (``largest_certifiable_radius``). No
    ``cert/acc@r`` is logged past it: no run could certify there, so the value is missing, shown "-" in
    W&B's run table as in ddsx-report's tables, not a measured 0.0.
    """
    summary = summarize(rows, radii)
    for radius in radii:
        if max_radius is not None and radius > max_radius:
            del summary[f"acc@{radius_key(radius)}"]
    metrics = metric_names(summary, prefix)
    samples = [row.samples for row in rows if row.samples is not None]
    if samples:
        metrics[f"{prefix}samples_mean"] = sum(samples) / len(samples)
    for logger in loggers:
        logger.log_metrics(metrics, step=step)
        if hasattr(logger, "save"):
            logger.save()  # CSVLogger buffers; after fit it was already finalised once
    for logger in wandb_loggers(loggers):
        _log_to_wandb(logger, rows, result_path, prefix, max_radius)
    return metrics


def _log_to_wandb(
    logger, rows: Sequence[ResultRow], result_path: Path, prefix: str, max_radius: float | None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import wandb

    columns = list(asdict(rows[0])) if rows else ["idx"]
    table = wandb.Table(columns=columns, data=[list(asdict(r).values()) for r in rows])
    # The certification package never imports ddsx.report: this small curve is drawn here (one curve,
    # named by the title; the dotted line is the sampling limit, as in the report's figures).
    tally = Tally(rows)
    ends = [r for r in tally.radii + [max_radius or 0.0] if math.isfinite(r)]
    grid = np.linspace(0.0, max(ends + [0.25]) * 1.05, 200)
    figure, axes = plt.subplots(figsize=(5, 3.5), layout="constrained")
    axes.plot(grid, [tally.certified_accuracy(r) for r in grid])
    if max_radius is not None and math.isfinite(max_radius):
        axes.axvline(max_radius, color="0.35", linestyle=":", label="largest radius n, alpha can certify")
        axes.legend(fontsize=7, loc="lower left")
    axes.set(xlabel="radius (l2, [0,1] pixels)", ylabel="certified accuracy", ylim=(0, 1))
    axes.set_title(result_path.stem, fontsize=9)
    experiment = logger.experiment
    experiment.log({f"{prefix}rows": table, f"{prefix}plot": wandb.Image(figure)})
    plt.close(figure)
    try:
        experiment.save(str(result_path), base_path=str(result_path.parent), policy="now")
    except Exception as error:  # the metrics are logged already; a missing file upload is not fatal
        log.warning("could not attach %s to the W&B run: %s", result_path, error)
