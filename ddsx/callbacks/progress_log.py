"""Training progress as plain log lines, for runs whose stdout is not a terminal (nohup, clusters, CI).

Rich progress bars print only their last frame off a terminal, so a job under nohup looks silent for
the whole run. This callback logs one line per epoch (metrics, time per epoch, ETA) and, within long
epochs, one line every ``every_seconds`` (or ``every_n_steps``). Lines go through the ``ddsx`` logger:
to the console and, in the same order, to the run's log file (Hydra's ``<app>.log``). On a terminal the
progress bar already shows all this, so the lines then go to the log file only.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from datetime import datetime, timedelta
from typing import Any

import lightning as L

log = logging.getLogger("ddsx.progress")


def format_duration(seconds: float) -> str:
    """1h02m, 4m05s, 37s: short enough for a log line, precise enough for an ETA."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def format_metrics(metrics: dict[str, Any], within_epoch: bool = False) -> str:
    """``name value`` pairs of the scalar metrics, sorted by name, each metric once.

    At an epoch's end: epoch values (``x_epoch`` shown as ``x``). Within an epoch: the training
    metrics of the last step only, since validation values would be last epoch's.
    """
    suffix, other = ("_step", "_epoch") if within_epoch else ("_epoch", "_step")
    shown: dict[str, float] = {}
    for name in sorted(metrics):
        if name.endswith(other) or (within_epoch and not name.startswith("train/")):
            continue
        if not name.endswith(suffix) and name + suffix in metrics:
            continue  # the logged alias of x_epoch / x_step
        try:
            shown[name.removesuffix(suffix)] = float(metrics[name])
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
        record = log.makeRecord(log.name, logging.INFO, __file__, 0, message, None, None)
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
        batches = trainer.num_training_batches
        done = batch_idx + 1
        rate = done / max(now - self._epoch_start, 1e-9)
        line = f"epoch {trainer.current_epoch + 1} step {done}/{batches if math.isfinite(batches) else '?'}"
        metrics = format_metrics(trainer.callback_metrics, within_epoch=True)
        if metrics:
            line += f" | {metrics}"
        line += f" | {rate:.2f} it/s"
        if math.isfinite(batches):
            line += f" | epoch ETA {format_duration((batches - done) / rate)}"
        self._emit(trainer, line)

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
            candidates.append((trainer.max_epochs - epoch) * per_epoch)
        if trainer.max_steps and trainer.max_steps > 0 and trainer.global_step:
            per_step = (now - self._fit_start) / trainer.global_step
            candidates.append(max(0, trainer.max_steps - trainer.global_step) * per_step)
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
