"""The resumable CSV logger: on Lightning's public Logger only; a second logger in the same folder
(a resumed run) appends, widens the header for a new metric, and drops rows after a checkpoint."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from lightning.pytorch.loggers import Logger

from ddsx.loggers.csv import ResumableCSVLogger


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_the_csv_logger_stands_on_lightnings_public_logger_only() -> None:
    from lightning.fabric.loggers import Logger as FabricLogger

    lightning_bases = [c for c in ResumableCSVLogger.__mro__ if c.__module__.startswith("lightning")]
    assert lightning_bases == [Logger, FabricLogger]  # not CSVLogger, whose writer is private


def test_a_resumed_logger_appends_widens_the_header_and_forgets_undone_work(tmp_path: Path) -> None:
    first = ResumableCSVLogger(tmp_path, name="csv", version="")
    first.log_hyperparams({"lr": 0.1})
    first.log_metrics({"train/loss": torch.tensor(0.5), "epoch": 0}, step=0)
    first.save()
    first.log_metrics({"train/loss": 0.25, "epoch": 1}, step=1)  # an epoch the checkpoint lacks
    first.finalize("success")
    path = tmp_path / "csv" / "metrics.csv"
    assert [r["train/loss"] for r in rows(path)] == ["0.5", "0.25"]
    assert (tmp_path / "csv" / "hparams.yaml").read_text().strip() == "lr: 0.1"

    resumed = ResumableCSVLogger(tmp_path, name="csv", version="")
    resumed.forget_after(epoch=0, global_step=1)
    resumed.log_metrics({"train/loss": 0.2, "val/acc": 0.75, "epoch": 1}, step=1)
    resumed.save()
    assert rows(path) == [
        {"epoch": "0", "step": "0", "train/loss": "0.5", "val/acc": ""},
        {"epoch": "1", "step": "1", "train/loss": "0.2", "val/acc": "0.75"},
    ]
