"""Progress reporting for training and certification: plain log lines for runs off a terminal.

Off a terminal (nohup, a cluster job, a pipe) a rich progress bar prints only its last frame, so such
a run looks silent for hours. Both reporters here therefore log lines through the ``ddsx.progress``
logger, which reaches the console and, in the same order, the run's log file (Hydra's ``<app>.log``):

- :class:`ProgressLog`, a Lightning callback for training: one line per epoch (metrics, time per
  epoch, ETA) and, within long epochs, one every ``every_seconds`` or ``every_n_steps``.
- :class:`CertifyProgress`, for the certification engine: a bar on a terminal, elsewhere a line
  ``certify 12/100 | cert acc 0.750 | ACR 0.412 | 0.85 examples/s | elapsed 14s | ETA 1m43s``.

Both share one duration format, one ETA rule (time per item times the items left) and one logger.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import lightning as L

from ddsx.utils.logging import get_logger

if TYPE_CHECKING:
    from ddsx.certification.metrics import Row

log = get_logger("ddsx.progress")


def format_duration(seconds: float) -> str:
    """1h02m, 4m05s, 37s: short enough for a log line, precise enough for an ETA."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def seconds_left(done: int, total: float, seconds_per_item: float | None) -> float | None:
    """The ETA of both reporters: the items left at ``seconds_per_item`` (None when unknown)."""
    if seconds_per_item is None or not math.isfinite(total):
        return None
    return max(0.0, total - done) * seconds_per_item


def format_metrics(metrics: dict[str, Any], within_epoch: bool = False) -> str:
    """``name value`` pairs of the scalar metrics, sorted by name, each metric once.

    At an epoch's end: epoch values (``x_epoch`` shown as ``x``). Within an epoch: only the metrics
    Lightning marks as this step's (``x_step``); any other name in ``callback_metrics`` mid-epoch
    (``train/acc`` logged on_epoch only, validation metrics) still holds the previous epoch's value.
    """
    shown: dict[str, float] = {}
    for name in sorted(metrics):
        if within_epoch:
            if not name.endswith("_step"):
                continue
            shown_as = name.removesuffix("_step")
        else:
            if name.endswith("_step") or (not name.endswith("_epoch") and name + "_epoch" in metrics):
                continue  # a step value, or the logged alias of x_epoch
            shown_as = name.removesuffix("_epoch")
        try:
            shown[shown_as] = float(metrics[name])
        except (TypeError, ValueError):
            continue
    return " | ".join(f"{name} {value:.4g}" for name, value in sorted(shown.items()))


class ProgressLog(L.Callback):
    """One log line per training epoch, and every ``every_seconds`` / ``every_n_steps`` within one.

    Args:
        every_seconds: within an epoch, a line at most this often (None: no time-based lines).
        every_n_steps: within an epoch, a line every this many optimizer steps (None: none).
        terminal: "auto" (lines to the console only when stdout is not a terminal, always to the log
            file), "always" (console and file) or "file" (log file only).
    """

    def __init__(
        self, every_seconds: float | None = 60.0, every_n_steps: int | None = None, terminal: str = "auto"
    ) -> None:
        if terminal not in ("auto", "always", "file"):
            raise ValueError(f"terminal must be 'auto', 'always' or 'file', got {terminal!r}")
        self.every_seconds = every_seconds
        self.every_n_steps = every_n_steps
        self.terminal = terminal
        self._fit_start = self._epoch_start = self._last_line = 0.0
        self._epoch_times: list[float] = []

    # ----- where lines go -------------------------------------------------------------------------
    def _to_console(self) -> bool:
        if self.terminal == "always":
            return True
        return self.terminal == "auto" and not sys.stdout.isatty()

    def _emit(self, trainer: L.Trainer, message: str) -> None:
        if not trainer.is_global_zero:
            return
        self._last_line = time.monotonic()
        if self._to_console():
            log.info(message)
            return
        # A terminal: the progress bar shows it; the log file still gets the line, in order.
        record = log.logger.makeRecord(log.logger.name, logging.INFO, __file__, 0, message, None, None)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)

    # ----- hooks ----------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = self._last_line = time.monotonic()
        self._epoch_times = []
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        self._emit(trainer, f"training: epoch {trainer.current_epoch + 1}/{total} starts")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.monotonic()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        by_steps = self.every_n_steps and (batch_idx + 1) % self.every_n_steps == 0
        by_time = self.every_seconds is not None and now - self._last_line >= self.every_seconds
        if not (by_steps or by_time):
            return
        self._emit(trainer, self.step_line(trainer, batch_idx + 1, now))

    def step_line(self, trainer: L.Trainer, done: int, now: float) -> str:
        """``epoch 2 step 40/100 | train/loss 0.31 | 3.2 it/s | epoch ETA 18s`` (this step's metrics only)."""
        batches = trainer.num_training_batches
        rate = done / max(now - self._epoch_start, 1e-9)
        line = f"epoch {trainer.current_epoch + 1} step {done}/{batches if math.isfinite(batches) else '?'}"
        metrics = format_metrics(trainer.callback_metrics, within_epoch=True)
        if metrics:
            line += f" | {metrics}"
        line += f" | {rate:.2f} it/s"
        eta = seconds_left(done, batches, 1 / rate)
        if eta is not None:
            line += f" | epoch ETA {format_duration(eta)}"
        return line

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = time.monotonic()
        self._epoch_times.append(now - self._epoch_start)
        epoch = trainer.current_epoch + 1
        line = f"epoch {epoch}"
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        if max_epochs:
            line += f"/{max_epochs}"
        line += f" done (step {trainer.global_step})"
        metrics = format_metrics(trainer.callback_metrics)
        if metrics:
            line += f" | {metrics}"
        per_epoch = sum(self._epoch_times) / len(self._epoch_times)
        line += f" | {format_duration(self._epoch_times[-1])}/epoch"
        remaining = self._remaining_seconds(trainer, epoch, per_epoch, now)
        if remaining is not None:
            finish = datetime.now() + timedelta(seconds=remaining)
            line += f" | ETA {format_duration(remaining)} ({finish:%H:%M})"
        self._emit(trainer, line)

    def _remaining_seconds(
        self, trainer: L.Trainer, epoch: int, per_epoch: float, now: float
    ) -> float | None:
        """Time left at the average epoch time, capped by max_steps and max_time when they are set."""
        candidates = []
        if trainer.max_epochs and trainer.max_epochs > 0:
            candidates.append(seconds_left(epoch, trainer.max_epochs, per_epoch))
        if trainer.max_steps and trainer.max_steps > 0 and trainer.global_step:
            per_step = (now - self._fit_start) / trainer.global_step
            candidates.append(seconds_left(trainer.global_step, trainer.max_steps, per_step))
        time_left = _max_time_remaining(trainer)
        if time_left is not None:
            candidates.append(max(0.0, time_left))
        return min(candidates) if candidates else None


def _max_time_remaining(trainer: L.Trainer) -> float | None:
    """Seconds of training left before Lightning's max_time (its Timer callback) stops it, or None."""
    from lightning.pytorch.callbacks import Timer

    for callback in trainer.callbacks:
        if isinstance(callback, Timer) and callback.time_remaining("train") is not None:
            return float(callback.time_remaining("train"))
    return None


class CertifyProgress:
    """``with CertifyProgress(total, enabled, seconds_per_example) as bar: bar.advance(row)``.

    The ETA comes from the timed warm-up batch until a few examples are done, then from the
    measured rate.

    Args:
        total: examples this process will certify.
        enabled: show anything at all (rank zero only).
        seconds_per_example: the warm-up estimate, used for the ETA until measured rates exist.
        terminal: draw a bar (None: when stdout is a terminal).
        every_seconds, every_examples: off a terminal, log a line when either has passed.
        clock: time source (tests).
    """

    MEASURED_AFTER = 3  # examples before the measured rate replaces the warm-up estimate

    def __init__(
        self,
        total: int,
        enabled: bool = True,
        seconds_per_example: float | None = None,
        *,
        description: str = "certify",
        terminal: bool | None = None,
        every_seconds: float = 30.0,
        every_examples: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Imported here: the certification package imports this module (through its engine).
        from ddsx.certification.metrics import Tally

        self.total, self.enabled = total, enabled and total > 0
        self.tally = Tally()
        self.estimate = seconds_per_example
        self.terminal = sys.stdout.isatty() if terminal is None else terminal
        self.every_seconds, self.every_examples = every_seconds, every_examples
        self._clock = clock
        self._start = self._last_line = clock()
        self._last_count = 0
        self._description = description
        self._progress = None
        self._task = None

    def __enter__(self) -> CertifyProgress:
        if self.enabled and self.terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("cert acc {task.fields[acc]}  ACR {task.fields[acr]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=self.total, acc="-", acr="-")
        return self

    def advance(self, row: Row) -> None:
        self.tally.add(row)
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.update(
                self._task,
                advance=1,
                acc=f"{self.tally.certified_accuracy(0.0):.3f}",
                acr=f"{self.tally.acr:.3f}",
            )
            return
        now = self._clock()
        due = now - self._last_line >= self.every_seconds
        due |= self.tally.count - self._last_count >= self.every_examples
        if due or self.tally.count == self.total:
            log.info(self.line(now))
            self._last_line, self._last_count = now, self.tally.count

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds left: warm-up estimate at first, measured rate after a few examples."""
        now = self._clock() if now is None else now
        done = self.tally.count
        per_example = (now - self._start) / done if done >= self.MEASURED_AFTER else self.estimate
        return seconds_left(done, self.total, per_example)

    def line(self, now: float | None = None) -> str:
        now = self._clock() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        eta = self.eta_seconds(now)
        return (
            f"{self._description} {self.tally.count}/{self.total} | cert acc "
            f"{self.tally.certified_accuracy(0.0):.3f} | ACR {self.tally.acr:.3f} | "
            f"{self.tally.count / elapsed:.3g} examples/s | elapsed {format_duration(elapsed)} | "
            f"ETA {'?' if eta is None else format_duration(eta)}"
        )

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()
