"""Summary numbers of a result file (method.md section 4).

certified accuracy at r = mean(correct and radius >= r); ACR = mean(radius * correct);
abstention = mean(predict == ABSTAIN). "Clean accuracy" of a run is the certified accuracy at
r = 0, i.e. how often the smoothed classifier's certified prediction is right (abstentions count
as wrong); ddsx files have no separate unsmoothed accuracy column.
"""

from __future__ import annotations

from collections.abc import Sequence

from ddsx.certification.results_file import ResultRow
from ddsx.smoothing import ABSTAIN


def certified_accuracy(rows: Sequence[ResultRow], radius: float) -> float:
    if not rows:
        return float("nan")
    return sum(1 for r in rows if r.correct and r.radius >= radius) / len(rows)


def summarize(rows: Sequence[ResultRow], radii: Sequence[float]) -> dict[str, float]:
    """``{"acc@0.25": ..., "acr": ..., "abstain": ..., "clean_acc": ..., "examples": ...}``."""
    count = len(rows)
    nan = float("nan")
    summary = {f"acc@{_radius_key(r)}": certified_accuracy(rows, r) for r in radii}
    summary["acr"] = sum(r.radius for r in rows if r.correct) / count if count else nan
    summary["abstain"] = sum(1 for r in rows if r.predict == ABSTAIN) / count if count else nan
    summary["clean_acc"] = certified_accuracy(rows, 0.0)
    summary["examples"] = float(count)
    return summary


def metric_names(summary: dict[str, float], prefix: str = "cert/") -> dict[str, float]:
    """The names logged to experiment loggers: ``cert/acc@0.5``, ``cert/acr``, ``cert/abstain``, ..."""
    return {f"{prefix}{key}": value for key, value in summary.items()}


def _radius_key(radius: float) -> str:
    """0.0 -> "0", 0.25 -> "0.25", 1.0 -> "1"."""
    return f"{radius:g}"
