"""A CSV logger that keeps the metrics of earlier epochs when a run is resumed in its own folder."""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv on start; this one reads its header and appends."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                header = next(csv.reader(file), [])
            # Known columns: rows with new ones make the base class rewrite the file with all columns.
            self.metrics_keys = sorted(header)

    def forget_after(self, epoch: int, global_step: int) -> None:
        """Drop the rows of work after a checkpoint (epoch, global_step), which a resumed run redoes (a
        kill mid-epoch leaves them): rows of later epochs, and epoch-less rows (learning rate) of later steps."""
        if not self._fs.isfile(self.metrics_file_path):
            return

        def before(row: dict[str, str]) -> bool:
            if row.get("epoch"):
                return float(row["epoch"]) <= epoch
            return not row.get("step") or float(row["step"]) < global_step

        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            fieldnames = reader.fieldnames or []
            rows = [r for r in reader if before(r)]
        tmp = self.metrics_file_path + ".tmp"
        with self._fs.open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.metrics_file_path)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose metrics.csv survives a resume: earlier rows stay, new rows are appended."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def forget_after(self, epoch: int, global_step: int) -> None:
        self.experiment.forget_after(epoch, global_step)
