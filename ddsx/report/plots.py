"""Certified accuracy against radius: the report's figures.

One figure of every run (with the best-over-sigma envelopes) and, where the runs have several sigmas,
one figure per sigma. What a reader must be able to tell from a figure alone:
- which curve is which method: a colour per method (a run's label less its sigma), one mapping for all
  figures of a report, so a method keeps its colour in the combined and in the per-sigma figures;
  sigma is the line style;
- under which settings: the title names n (the budget of a sequential run), alpha and the examples;
- why curves fall to 0: a dotted vertical line at the largest radius n and alpha can certify,
  sigma * PhiInv(alpha ** (1 / n)) (``Run.max_radius``). Beyond it no run could certify anything,
  whatever its classifier: a sampling limit, not a measurement (the tables show "-" there).
The legend lists methods and sigmas once each, below the axes: the curves keep the figure's width.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from ddsx.certification.result_file import ResultRow  # noqa: E402
from ddsx.report.runs import Run, envelope_groups  # noqa: E402

# Ten colours that stay apart in print and for the common colour-vision deficiencies (matplotlib's
# tab10); more methods than that reuse them in order.
PALETTE = tuple(to_hex(colour) for colour in matplotlib.colormaps["tab10"].colors)
# Line style per sigma, smallest sigma first. Plain dots are left to the sampling-limit lines.
SIGMA_STYLES = ("-", "--", "-.", (0, (6, 2, 1, 2, 1, 2)), (0, (10, 3)))
LIMIT_COLOUR = "0.35"
GRID_COLOUR = "0.6"
LEGEND_COLUMNS = 2
FIGURE_WIDTH = 6.4  # inches
SAMPLING_LIMIT = "sampling limit: the largest radius n and alpha can certify"


def accuracy_curve(rows: Sequence[ResultRow], radii: np.ndarray) -> np.ndarray:
    """Certified accuracy at each radius (rows with correct and radius >= r, over all rows).

    A NaN radius certifies nothing; an infinite one counts at every radius (the row validator refuses
    both before a report, but a figure of hostile rows must not fail on them).
    """
    if not rows:
        return np.full(len(radii), np.nan)
    certified = np.array([r.radius for r in rows if r.correct], dtype=float)
    certified = np.sort(certified[~np.isnan(certified)])
    # Count of certified radii >= r, for every r at once.
    return (len(certified) - np.searchsorted(certified, radii, side="left")) / len(rows)


def method_colours(methods: Iterable[str]) -> dict[str, str]:
    """A colour per method name, in sorted order of the names: the same names give the same colours,
    whichever subset of them a figure shows."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(methods)))}


def settings_line(runs: Sequence[Run]) -> str:
    """``n=10000, alpha=0.001, 500 examples`` (several values joined by ``/``; ``budget n`` where a
    run's n is the budget of a sequential test)."""
    n = _values(run.n for run in runs)
    alpha = _values(run.alpha for run in runs)
    examples = _values(len(run.rows) for run in runs)
    name = "budget n" if any(run.mode != "fixed" for run in runs) else "n"
    return f"{name}={n}, alpha={alpha}, {examples} examples"


def plot_certified_accuracy(
    runs: Sequence[Run],
    colours: Mapping[str, str] | None = None,
    envelopes: bool = True,
    max_radius: float | None = None,
    title: str = "",
) -> Figure:
    """One step curve per run (colour: its method, ``Run.group``; style: its sigma), the pointwise max
    over sigma of each envelope group (a wide pale band in the method's colour) and the sampling
    limit of each sigma.

    ``colours``: method name -> colour, shared by every figure of a report (default: from these runs).
    ``max_radius``: the x-axis limit (default: a little past the largest certified radius).
    """
    colours = dict(colours) if colours is not None else method_colours(run.group for run in runs)
    sigmas = sorted({run.sigma for run in runs if run.sigma is not None})
    style_of = {sigma: SIGMA_STYLES[i % len(SIGMA_STYLES)] for i, sigma in enumerate(sigmas)}
    top = max_radius if max_radius is not None else _axis_end(runs)
    radii = np.linspace(0.0, top, 400)
    limits = _limits(runs, top)
    groups = envelope_groups(runs) if envelopes else []
    handles = _legend_handles(runs, colours, style_of, bool(groups), {colour for _, _, colour in limits})
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH, 4.0), layout="constrained")
    for members in groups:
        best = np.nanmax(np.stack([accuracy_curve(m.rows, radii) for m in members]), axis=0)
        ax.plot(radii, best, color=colours[members[0].group], linewidth=5, alpha=0.25, zorder=1)
    for run in runs:
        ax.plot(
            radii,
            accuracy_curve(run.rows, radii),
            color=colours[run.group],
            linestyle=style_of.get(run.sigma, "-"),
            linewidth=1.3,
            label=run.label,
            zorder=2,
        )
    for radius, text, colour in limits:
        ax.axvline(radius, color=colour, linestyle=":", linewidth=1.2, zorder=3)
        ax.text(radius, 0.985, text, rotation=90, fontsize=6, color=colour, ha="right", va="top",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5}, zorder=4)  # fmt: skip
    ax.set_xlabel(r"radius ($\ell_2$, [0,1] pixel units)")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, top)
    ax.grid(alpha=0.3)
    ax.set_title("\n".join(part for part in (title, settings_line(runs) if runs else "") if part), fontsize=9)
    _legend_below(fig, handles)
    return fig


def _legend_below(fig: Figure, handles: list[Line2D]) -> None:
    """The legend below the axes, where it takes height rather than the curves' width: in two columns,
    or one where two would be wider than the figure; the figure grows by the legend's rows."""
    for columns in (LEGEND_COLUMNS, 1):
        legend = fig.legend(
            handles=handles, loc="outside lower center", ncols=columns, fontsize=7, frameon=False
        )
        if columns == 1 or legend.get_window_extent(fig.canvas.get_renderer()).width <= fig.bbox.width:
            break
        legend.remove()
    fig.set_figheight(4.0 + 0.17 * math.ceil(len(handles) / columns))


def report_figures(
    runs: Sequence[Run], max_radius: float | None = None, title: str = ""
) -> dict[str, Figure]:
    """The report's figures by file stem: ``certified_accuracy`` (every run without a problem, with the
    envelopes) and, with several sigmas, ``certified_accuracy_sigma<s>`` (the runs at each), all with
    one colour per method."""
    usable = [run for run in runs if not run.problem]
    colours = method_colours(run.group for run in usable)
    figures = {
        "certified_accuracy": plot_certified_accuracy(usable, colours, max_radius=max_radius, title=title)
    }
    sigmas = sorted({run.sigma for run in usable if run.sigma is not None})
    for sigma in sigmas if len(sigmas) > 1 else []:
        at_sigma = [run for run in usable if run.sigma == sigma]
        figures[f"certified_accuracy_sigma{sigma:g}"] = plot_certified_accuracy(
            at_sigma,
            colours,
            max_radius=max_radius,
            title=", ".join(part for part in (title, f"sigma={sigma:g}") if part),
        )
    return figures


def write_plots(
    runs: Sequence[Run], out: Path, max_radius: float | None = None, title: str = ""
) -> dict[str, Path]:
    """Save :func:`report_figures` into ``out``: certified_accuracy.png and .pdf, and a png per sigma
    (keys ``png``, ``pdf``, ``sigma<s>``); returns their paths."""
    paths = {}
    for stem, figure in report_figures(runs, max_radius, title).items():
        if stem == "certified_accuracy":
            for ext in ("png", "pdf"):
                paths[ext] = out / f"{stem}.{ext}"
                figure.savefig(paths[ext], dpi=150, bbox_inches="tight")
        else:
            paths[stem.removeprefix("certified_accuracy_")] = out / f"{stem}.png"
            figure.savefig(out / f"{stem}.png", dpi=150, bbox_inches="tight")
        plt.close(figure)
    return paths


def _axis_end(runs: Sequence[Run]) -> float:
    """A little past the largest finite certified radius (at least 0.5) and past the radius where each
    run's curve must end (:func:`_curve_end`), so that the line saying why is in view."""
    radii = [row.radius for run in runs for row in run.rows if row.correct and math.isfinite(row.radius)]
    ends = [end for end in map(_curve_end, runs) if end is not None]
    return max(radii + ends + [0.5]) * 1.05


def _curve_end(run: Run) -> float | None:
    """The radius past which the run certifies nothing, whatever its classifier: its sampling limit,
    or the last radius of a sequential run's grid where that comes first (it tests those radii only)."""
    ceiling = run.max_radius
    if ceiling is None or not math.isfinite(ceiling):
        return None
    grid = _grid(run)
    return min(ceiling, max(grid)) if grid else ceiling


def _grid(run: Run) -> list[float]:
    """The finite radii a sequential run tests (its settings' radii); [] for a fixed-n run."""
    radii = run.extra.get("radii") if run.grid else None
    return [float(r) for r in radii or [] if isinstance(r, int | float) and math.isfinite(r)]


def _limits(runs: Sequence[Run], top: float) -> list[tuple[float, str, str]]:
    """(radius, text, colour) of the vertical lines inside the axis: each sigma's sampling limit, and the
    end of a sequential run's grid where it comes before the limit."""
    limits: dict[float, tuple[str, str]] = {}
    for run in runs:
        ceiling = run.max_radius
        if ceiling is None or not math.isfinite(ceiling):
            continue
        limits.setdefault(round(ceiling, 9), (f"sampling limit, sigma={run.sigma:g} ", LIMIT_COLOUR))
        grid = _grid(run)
        if grid and max(grid) < ceiling:
            limits.setdefault(round(max(grid), 9), ("end of the radius grid ", GRID_COLOUR))
    return [(radius, *limits[radius]) for radius in sorted(limits) if 0 < radius <= top]


def _legend_handles(
    runs: Sequence[Run],
    colours: Mapping[str, str],
    style_of: Mapping[float, object],
    envelope: bool,
    limit_colours: set[str],
) -> list[Line2D]:
    """One entry per method, one per sigma (where there are several), the envelope and the limit line."""
    repeats = Counter((run.group, run.sigma) for run in runs)
    handles = []
    for method in dict.fromkeys(run.group for run in runs):
        most = max(count for (group, _), count in repeats.items() if group == method)
        label = method + (f" ({most} runs per sigma)" if most > 1 else "")
        handles.append(Line2D([], [], color=colours[method], linewidth=2, label=label))
    if len(style_of) > 1:
        handles += [
            Line2D([], [], color="k", linestyle=style, linewidth=1.3, label=f"sigma={sigma:g}")
            for sigma, style in style_of.items()
        ]
    if envelope:
        handles.append(Line2D([], [], color="0.5", linewidth=5, alpha=0.35, label="best over sigma"))
    for colour, label in (
        (LIMIT_COLOUR, SAMPLING_LIMIT),
        (GRID_COLOUR, "last radius a sequential run tests"),
    ):
        if colour in limit_colours:
            handles.append(Line2D([], [], color=colour, linestyle=":", linewidth=1.2, label=label))
    return handles


def _values(values: Iterable[object]) -> str:
    """Distinct values in order, ``/``-joined; ``?`` for an unknown one."""
    shown = ["?" if v is None else f"{v:g}" if isinstance(v, float) else str(v) for v in values]
    return "/".join(dict.fromkeys(shown)) or "?"
