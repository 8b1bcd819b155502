"""Progress of a certification run: a bar on a terminal, a log line every few seconds elsewhere.

Off a terminal (nohup, a cluster job, a pipe) a rich bar prints only its last frame, so there a line
``certify 12/100 | cert acc 0.750 | ACR 0.412 | 0.85 examples/s | ETA 0:01:43`` goes to the log
every ``every_seconds`` or ``every_examples``. The ETA comes from the timed warm-up batch until a
few examples are done, then from the measured rate.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from ddsx.certification.metrics import Row, Tally
from ddsx.certification.result_file import format_elapsed
from ddsx.utils.logging import get_logger

log = get_logger(__name__)


class CertifyProgress:
    """``with CertifyProgress(total, enabled, seconds_per_example) as bar: bar.advance(row)``.

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
        if done >= self.MEASURED_AFTER:
            per_example = (now - self._start) / done
        elif self.estimate is not None:
            per_example = self.estimate
        else:
            return None
        return per_example * (self.total - done)

    def line(self, now: float | None = None) -> str:
        now = self._clock() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        eta = self.eta_seconds(now)
        return (
            f"{self._description} {self.tally.count}/{self.total} | cert acc "
            f"{self.tally.certified_accuracy(0.0):.3f} | ACR {self.tally.acr:.3f} | "
            f"{self.tally.count / elapsed:.3g} examples/s | elapsed {format_elapsed(round(elapsed))} | "
            f"ETA {'?' if eta is None else format_elapsed(round(eta))}"
        )

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()
