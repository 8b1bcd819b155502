"""ddsx-report's figures (issue 22 item 14, issue 21 item 1): read back through matplotlib's objects.

The legend leaves the curves the figure's width, the title names n, alpha and the examples, the
sampling limit is a labelled line, a method keeps its colour in every figure, and rows a validator
would refuse (NaN, inf radii) do not break a figure.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from ddsx.certification.result_file import ResultRow
from ddsx.cli.report import build_report, main
from ddsx.report.plots import plot_certified_accuracy, report_figures
from ddsx.report.runs import Run

# 0.5 * PhiInv(0.001 ** (1 / 1000)) = 0.5 * 2.4633: the largest radius n = 1000, alpha = 0.001 certify
# at sigma 0.5 (all 1000 samples on the top class).
CEILING_05 = 1.2316


def run(method: str, sigma: float, radii: list[float], n: int = 1000, mode: str = "fixed", **extra) -> Run:
    """A run of ``method`` at ``sigma`` whose rows are correct with these radii, plus one wrong row."""
    rows = [ResultRow(i, 1, 1, r, 1, "0:00:01", n=n, sigma=sigma) for i, r in enumerate(radii)]
    rows.append(ResultRow(len(radii), 1, 2, 0.0, 0, "0:00:01", n=n, sigma=sigma))
    return Run(
        path=Path(f"{method}_{sigma}.tsv"),
        rows=rows,
        sigma=sigma,
        method=method,
        dataset="mnist5k",
        classifier="lenet",
        n=n,
        alpha=0.001,
        mode=mode,
        **extra,
    )


def line_of(figure: Figure, label: str):
    [line] = [line for line in figure.axes[0].get_lines() if line.get_label() == label]
    return line


def test_the_legend_sits_below_the_axes_and_the_curves_keep_the_width() -> None:
    # 18 runs with long labels: the case where a legend beside the axes took half the figure.
    methods = [f"method_{i}_with_a_long_name D=mnist5k_ddpm" for i in range(6)]
    single = [run(m, s, [0.2, 0.4]) for m in methods for s in (0.25, 0.5, 1.0)]
    # and with two runs per method and sigma (seeds), whose longer labels do not fit two columns
    repeated = single + [run(m, s, [0.3]) for m in methods for s in (0.25, 0.5, 1.0)]
    # entries: methods, sigmas, the envelope (none where a sigma has repeats), the sampling limit
    for runs, entries in ((single, 6 + 3 + 2), (repeated, 6 + 3 + 1)):
        figure = plot_certified_accuracy(runs)
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        axes_box = figure.axes[0].get_window_extent(renderer)
        [legend] = figure.legends
        legend_box = legend.get_window_extent(renderer)
        assert legend_box.y1 <= axes_box.y0  # below the axes, not over the curves or beside them
        assert 0 <= legend_box.x0 and legend_box.x1 <= figure.bbox.width  # whole, inside the figure
        assert axes_box.width >= 0.8 * figure.bbox.width
        assert len(legend.get_texts()) == entries  # one entry per method and per sigma, not per run
        plt.close(figure)


def test_the_title_names_n_alpha_and_the_examples() -> None:
    figure = plot_certified_accuracy([run("gaussian", 0.5, [0.3, 0.6, 0.9])], title="mnist5k")
    assert figure.axes[0].get_title() == "mnist5k\nn=1000, alpha=0.001, 4 examples"
    plt.close(figure)
    sequential = plot_certified_accuracy([run("gaussian", 0.5, [0.3], mode="sequential", n=500)])
    assert sequential.axes[0].get_title() == "budget n=500, alpha=0.001, 2 examples"  # n is a budget
    plt.close(sequential)


def test_the_sampling_limit_is_a_labelled_vertical_line_in_view() -> None:
    figure = plot_certified_accuracy([run("gaussian", 0.5, [0.3, 0.6, 0.9])])
    axes = figure.axes[0]
    vertical = [line for line in axes.get_lines() if len(set(line.get_xdata())) == 1]
    assert len(vertical) == 1 and vertical[0].get_linestyle() == ":"
    assert vertical[0].get_xdata()[0] == pytest.approx(CEILING_05, abs=1e-3)
    assert CEILING_05 < axes.get_xlim()[1]  # the axis reaches past it, though no row is certified there
    texts = [t.get_text() for t in axes.texts]
    assert any("sampling limit" in text and "sigma=0.5" in text for text in texts)
    assert any("sampling limit" in t.get_text() for t in figure.legends[0].get_texts())
    plt.close(figure)


def test_a_sequential_run_s_grid_end_is_marked_where_it_comes_before_the_limit() -> None:
    grid = {"radii": [0.0, 0.25, 0.5, 0.75]}
    figure = plot_certified_accuracy([run("gaussian", 0.5, [0.25, 0.75], mode="sequential", extra=grid)])
    axes = figure.axes[0]
    ends = sorted(line.get_xdata()[0] for line in axes.get_lines() if len(set(line.get_xdata())) == 1)
    assert ends == [0.75]  # the limit (1.2316) is past the axis, which ends just after the grid
    assert any("end of the radius grid" in t.get_text() for t in axes.texts)
    plt.close(figure)


def test_a_method_keeps_its_colour_in_the_combined_and_the_per_sigma_figures() -> None:
    # A baseline certified at sigma 0.25 only comes first among the combined figure's methods, not in
    # the sigma=0.5 figure: colours given by position in each figure would differ for dds_adv.
    runs = [run("dds_adv", 0.25, [0.2]), run("dds_adv", 0.5, [0.4]), run("gaussian", 0.5, [0.3])]
    runs.append(run("baseline", 0.25, [0.1]))
    figures = report_figures(runs)
    label = runs[1].label
    combined = line_of(figures["certified_accuracy"], label).get_color()
    assert line_of(figures["certified_accuracy_sigma0.5"], label).get_color() == combined
    assert line_of(figures["certified_accuracy"], runs[0].label).get_color() == combined  # same method
    assert line_of(figures["certified_accuracy"], runs[2].label).get_color() != combined
    for figure in figures.values():
        plt.close(figure)


def test_nan_and_inf_radii_do_not_break_a_figure() -> None:
    hostile = run("gaussian", 0.5, [0.3, math.nan, math.inf])
    figure = plot_certified_accuracy([hostile])
    figure.canvas.draw()  # laying it out is where an infinite limit fails
    low, high = figure.axes[0].get_xlim()
    assert low == 0 and math.isfinite(high)
    # the infinite radius counts at every radius, the NaN one at none: 2 of 4 at r = 0.5
    line = line_of(figure, hostile.label)
    at_half = line.get_ydata()[abs(line.get_xdata() - 0.5).argmin()]
    assert at_half == pytest.approx(0.25)
    plt.close(figure)


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_a_max_radius_that_is_not_a_finite_positive_number_is_refused(value: str, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["some.tsv", "--max-radius", value])
    assert stopped.value.code == 2
    assert "--max-radius" in capsys.readouterr().err


def test_the_no_envelope_paragraph_is_printed_only_where_runs_could_share_one() -> None:
    single, _ = build_report([run("gaussian", 0.5, [0.3])], [0.0, 0.5])
    assert "No best-over-sigma envelope" not in single
    # two runs at one sigma: there is no sigma to take the best over
    same_sigma, _ = build_report([run("gaussian", 0.5, [0.3]), run("dds", 0.5, [0.3])], [0.0, 0.5])
    assert "No best-over-sigma envelope" not in same_sigma
    # runs at two sigmas that differ in more than sigma: here the paragraph says why there is none
    apart, _ = build_report([run("gaussian", 0.25, [0.3]), run("dds", 0.5, [0.3])], [0.0, 0.5])
    assert "No best-over-sigma envelope: no two runs differ in sigma alone" in apart
