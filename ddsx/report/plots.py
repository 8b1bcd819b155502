"""Certified accuracy against radius, one curve per run, dashed best-over-sigma envelopes."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ddsx.certification.result_file import ResultRow  # noqa: E402


def accuracy_curve(rows: Sequence[ResultRow], radii: np.ndarray) -> np.ndarray:
    """Certified accuracy at each radius (rows with correct and radius >= r, over all rows)."""
    if not rows:
        return np.full(len(radii), np.nan)
    certified = np.sort(np.array([r.radius for r in rows if r.correct], dtype=float))
    # Count of certified radii >= r, for every r at once.
    return (len(certified) - np.searchsorted(certified, radii, side="left")) / len(rows)


def plot_certified_accuracy(
    curves: dict[str, Sequence[ResultRow]],
    envelopes: dict[str, list[Sequence[ResultRow]]] | None = None,
    max_radius: float | None = None,
    title: str = "",
) -> Figure:
    """One step curve per labelled run; each envelope is the pointwise max over its runs."""
    all_rows = [row for rows in curves.values() for row in rows]
    top = max_radius or max([row.radius for row in all_rows if row.correct] + [0.5]) * 1.05
    radii = np.linspace(0.0, top, 400)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for label, rows in curves.items():
        ax.plot(radii, accuracy_curve(rows, radii), label=label, linewidth=1.4)
    for i, (label, members) in enumerate((envelopes or {}).items()):
        best = np.nanmax(np.stack([accuracy_curve(rows, radii) for rows in members]), axis=0)
        style = ("--", ":", "-.")[i % 3]
        ax.plot(radii, best, color="k", linestyle=style, linewidth=1.2, label=f"{label} (best over sigma)")
    ax.set_xlabel(r"radius ($\ell_2$, [0,1] pixel units)")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, top)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    # Outside the axes, to the right: inside, it covers the curves. Save with bbox_inches="tight".
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return fig
