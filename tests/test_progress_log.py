"""Training progress off a terminal: per-epoch lines with metrics and an ETA, in stdout and the log file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ddsx.progress import format_duration, format_metrics

EPOCH_LINE = re.compile(r"epoch (\d+)/3 done \(step \d+\) \| .*val/acc_denoised [\d.]+.* \| ETA \S+")


@pytest.mark.e2e
def test_ddsx_train_with_stdout_to_a_file_logs_every_epoch(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    stdout = tmp_path / "stdout.txt"
    with stdout.open("w") as out:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "ddsx.cli.train",
                "dataset=digits",
                "debug=limit",
                "trainer.max_epochs=3",
                "trainer.limit_train_batches=3",
                "trainer.limit_val_batches=1",
                "test=false",
                f"hydra.run.dir={run_dir}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ | {"OMP_NUM_THREADS": "1"},
            timeout=300,
        )
    text = stdout.read_text()
    assert result.returncode == 0, text[-3000:]
    assert [int(m.group(1)) for m in EPOCH_LINE.finditer(text)] == [1, 2, 3], text[-3000:]
    # The same lines, in the same order, in the run's log file.
    logged = (run_dir / "train.log").read_text()
    assert [int(m.group(1)) for m in EPOCH_LINE.finditer(logged)] == [1, 2, 3], logged[-3000:]


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (37.4, "37s"), (245, "4m05s"), (3720, "1h02m")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_metrics_shows_each_metric_once() -> None:
    # What Lightning holds for self.log("train/loss", on_step=True, on_epoch=True) and a val metric.
    metrics = {
        "train/loss": 1.0,
        "train/loss_step": 1.0,
        "train/loss_epoch": 0.5,
        "val/acc": 0.25,
        "note": "x",
    }
    assert format_metrics(metrics) == "train/loss 0.5 | val/acc 0.25"
    assert format_metrics(metrics, within_epoch=True) == "train/loss 1"


def test_mid_epoch_lines_show_only_this_epochs_values() -> None:
    # Mid-epoch, Lightning still holds last epoch's value of a metric logged on_epoch only
    # (train/acc) and of the validation metrics; only the x_step names are this epoch's.
    metrics = {"train/loss": 0.2, "train/loss_step": 0.2, "train/acc": 0.9, "val/acc_clean": 0.8}
    assert format_metrics(metrics, within_epoch=True) == "train/loss 0.2"


def test_a_real_training_runs_mid_epoch_lines_carry_no_epoch_only_metric(caplog) -> None:
    import lightning as L
    import torch

    from ddsx.progress import ProgressLog

    class Logs(L.LightningModule):  # logs as ddsx's methods do (methods/base.py)
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 2)

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self.layer(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(y))
            self.log("train/acc", (logits.argmax(1) == y).float().mean(), on_step=False, on_epoch=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(8, 2), torch.randint(0, 2, (8,)))
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ProgressLog(every_seconds=None, every_n_steps=2, terminal="always")],
    )
    with caplog.at_level("INFO", logger="ddsx.progress"):
        trainer.fit(Logs(), torch.utils.data.DataLoader(data, batch_size=2))
    steps = [r.getMessage() for r in caplog.records if " step " in r.getMessage()]
    assert [line.split(" |")[0] for line in steps] == [
        f"epoch {e} step {s}/4" for e in (1, 2) for s in (2, 4)
    ]
    assert all("train/loss " in line and "train/acc" not in line for line in steps), steps


def test_the_eta_is_capped_by_the_time_lightnings_max_time_leaves() -> None:
    import time

    import lightning as L
    from lightning.pytorch.callbacks import Timer

    from ddsx.progress import ProgressLog

    trainer = L.Trainer(max_time={"seconds": 100}, max_epochs=1000, logger=False, enable_progress_bar=False)
    timer = next(c for c in trainer.callbacks if isinstance(c, Timer))
    timer.on_train_start(trainer, None)
    remaining = ProgressLog()._remaining_seconds(trainer, epoch=1, per_epoch=60.0, now=time.monotonic())
    assert 95 < remaining <= 100  # 999 epochs of 60 s are left, but max_time stops training first
