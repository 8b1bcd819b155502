"""A progress bar over certified examples showing the running certified accuracy (rank zero only)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class CertifyProgress:
    """``with CertifyProgress(total, enabled) as bar: bar.advance(correct, radius)``."""

    def __init__(self, total: int, enabled: bool = True, description: str = "certify") -> None:
        self.total, self.enabled = total, enabled and total > 0
        self.seen = self.correct = 0
        self.radius_sum = 0.0
        self._progress: Progress | None = None
        self._task = None
        self._description = description

    def __enter__(self) -> CertifyProgress:
        if self.enabled:
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

    def advance(self, correct: bool, radius: float) -> None:
        self.seen += 1
        self.correct += int(correct)
        self.radius_sum += radius if correct else 0.0
        if self._progress is not None:
            self._progress.update(
                self._task,
                advance=1,
                acc=f"{self.correct / self.seen:.3f}",
                acr=f"{self.radius_sum / self.seen:.3f}",
            )

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()
