"""Summary numbers of certification rows (docs/method.md section 4): the one implementation in ddsx.

certified accuracy at r = mean(correct and radius >= r); ACR = mean(radius * correct);
abstention = mean(predict == ABSTAIN). "Clean accuracy" of a run is the certified accuracy at
r = 0, i.e. how often the smoothed classifier's certified prediction is right (abstentions count
as wrong); ddsx files have no separate unsmoothed accuracy column. The progress display, the
callback, the ddsx-certify summary and ddsx-report all read these numbers from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from ddsx.smoothing import ABSTAIN


class Row(Protocol):
    predict: int
    radius: float
    correct: int


def certified_at(row: Row, radius: float) -> bool:
    """One example's term of the certified accuracy at ``radius``: a correct prediction certified that far."""
    return bool(row.correct) and row.radius >= radius


def acr_term(row: Row) -> float:
    """One example's term of the ACR: its radius when the prediction is correct, else 0."""
    return row.radius if row.correct else 0.0


class Tally:
    """Running sums over rows; ``add`` one row at a time (progress) or build from a list (summaries)."""

    def __init__(self, rows: Iterable[Row] = ()) -> None:
        self.count = 0
        self.abstained = 0
        self.radius_sum = 0.0  # over correct rows
        self.radii: list[float] = []  # radius of each correct row (abstentions and errors are wrong)
        for row in rows:
            self.add(row)

    def add(self, row: Row) -> None:
        self.count += 1
        self.abstained += int(row.predict == ABSTAIN)
        self.radius_sum += acr_term(row)
        if row.correct:
            self.radii.append(row.radius)

    def certified_accuracy(self, radius: float) -> float:
        if not self.count:
            return float("nan")
        return sum(1 for r in self.radii if r >= radius) / self.count

    @property
    def acr(self) -> float:
        return self.radius_sum / self.count if self.count else float("nan")

    @property
    def abstention(self) -> float:
        return self.abstained / self.count if self.count else float("nan")

    def summary(self, radii: Sequence[float]) -> dict[str, float]:
        """``{"acc@0.25": ..., "acr": ..., "abstain": ..., "clean_acc": ..., "examples": ...}``."""
        values = {f"acc@{radius_key(r)}": self.certified_accuracy(r) for r in radii}
        values["acr"] = self.acr
        values["abstain"] = self.abstention
        values["clean_acc"] = self.certified_accuracy(0.0)
        values["examples"] = float(self.count)
        return values


def certified_accuracy(rows: Sequence[Row], radius: float) -> float:
    return Tally(rows).certified_accuracy(radius)


def summarize(rows: Sequence[Row], radii: Sequence[float]) -> dict[str, float]:
    """``{"acc@0.25": ..., "acr": ..., "abstain": ..., "clean_acc": ..., "examples": ...}``."""
    return Tally(rows).summary(radii)


def metric_names(summary: dict[str, float], prefix: str = "cert/") -> dict[str, float]:
    """The names logged to experiment loggers: ``cert/acc@0.5``, ``cert/acr``, ``cert/abstain``, ..."""
    return {f"{prefix}{key}": value for key, value in summary.items()}


def format_summary(summary: dict[str, float], radii: Sequence[float]) -> str:
    """One console line: ``certified accuracy r=0: 0.812, r=0.25: 0.700, ... | ACR 0.512 | abstain 0.031``."""
    accs = ", ".join(f"r={r:g}: {summary[f'acc@{radius_key(r)}']:.3f}" for r in radii)
    return (
        f"certified accuracy {accs} | ACR {summary['acr']:.3f} | abstain {summary['abstain']:.3f} "
        f"| {int(summary['examples'])} examples"
    )


def radius_key(radius: float) -> str:
    """0.0 -> "0", 0.25 -> "0.25", 1.0 -> "1"."""
    return f"{radius:g}"
