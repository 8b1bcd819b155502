"""A CSV metrics logger that keeps the metrics of earlier epochs when a run is resumed in its folder.

Lightning's CSVLogger deletes an existing metrics.csv when it starts, and changing that meant
overriding private parts of its writer. This logger stands on Lightning's public ``Logger`` base
only: it writes ``<save_dir>/<name>/<version>/metrics.csv`` (one row per logged step, columns sorted,
the file rewritten with the wider header when a new metric appears) and ``hparams.yaml``, appends to
an existing metrics.csv, and on resume drops the rows of work the checkpoint does not hold.
"""

from __future__ import annotations

import csv
import os
from argparse import Namespace
from pathlib import Path
from typing import Any

from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

METRICS_FILE, HPARAMS_FILE = "metrics.csv", "hparams.yaml"


class ResumableCSVLogger(Logger):
    """``metrics.csv`` that survives a resume: earlier rows stay, new rows are appended.

    Args:
        save_dir: folder of the logs.
        name: subfolder below ``save_dir`` ("" or None: none).
        version: subfolder below ``name`` ("" or None: none).
        prefix: put before every metric name (``prefix-name``).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        name: str | None = "csv",
        version: str | int | None = "",
        prefix: str = "",
    ) -> None:
        super().__init__()
        self._save_dir, self._name = os.fspath(save_dir), name or ""
        self._version = "" if version is None else str(version)
        self.prefix = prefix
        self.pending: list[dict[str, Any]] = []
        self.hparams: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self._version

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def log_dir(self) -> str:
        return os.path.join(self.save_dir, self.name, self.version)

    @property
    def metrics_file(self) -> Path:
        return Path(self.log_dir) / METRICS_FILE

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace | None = None, *args: Any, **kwargs: Any
    ) -> None:
        self.hparams.update(vars(params) if isinstance(params, Namespace) else dict(params or {}))
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        save_hparams_to_yaml(os.path.join(self.log_dir, HPARAMS_FILE), self.hparams)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        row = {self._prefixed(k): v.item() if hasattr(v, "item") else v for k, v in metrics.items()}
        row["step"] = len(self.pending) if step is None else step
        self.pending.append(row)

    def _prefixed(self, key: str) -> str:
        return f"{self.prefix}-{key}" if self.prefix else key

    @rank_zero_only
    def save(self) -> None:
        """Append the pending rows; rewrite the file when they bring a column it does not have."""
        if not self.pending:
            return
        header, rows = self._read()
        columns = sorted(set(header).union(*self.pending))
        self.metrics_file.parent.mkdir(parents=True, exist_ok=True)
        if header and columns == header:
            with self.metrics_file.open("a", newline="") as file:
                csv.DictWriter(file, fieldnames=columns).writerows(self.pending)
        else:
            self._write(columns, [*rows, *self.pending])
        self.pending = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()

    @rank_zero_only
    def forget_after(self, epoch: int, global_step: int) -> None:
        """Drop the rows of work after a checkpoint (epoch, global_step), which a resumed run redoes (a
        kill mid-epoch leaves them): rows of later epochs, and epoch-less rows (learning rate) of later steps."""
        header, rows = self._read()
        if not header:
            return

        def before(row: dict[str, str]) -> bool:
            if row.get("epoch"):
                return float(row["epoch"]) <= epoch
            return not row.get("step") or float(row["step"]) < global_step

        self._write(header, [row for row in rows if before(row)])

    def _read(self) -> tuple[list[str], list[dict[str, str]]]:
        if not self.metrics_file.is_file():
            return [], []
        with self.metrics_file.open(newline="") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
            return list(reader.fieldnames or []), rows

    def _write(self, columns: list[str], rows: list[dict[str, Any]]) -> None:
        """Replace the file in one step, so a kill while writing leaves the old or the new file."""
        tmp = self.metrics_file.with_name(METRICS_FILE + ".tmp")
        with tmp.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.metrics_file)
