"""Paired comparisons (ddsx-report --paired): McNemar's exact test and the paired ACR bootstrap."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ddsx.certification.result_file import HEADER, ResultRow, format_row
from ddsx.cli import report as report_cli
from ddsx.report.paired import (
    McNemarResult,
    UnpairedRunsError,
    acr_difference_interval,
    holm_over_radii,
    mcnemar_exact,
    mcnemar_per_radius,
    paired_rows,
)


def rows(radii: list[float], correct: list[int], labels: list[int] | None = None) -> list[ResultRow]:
    labels = labels or [i % 10 for i in range(len(radii))]
    return [
        ResultRow(
            idx=i,
            label=labels[i],
            predict=labels[i] if c else -1,
            radius=r,
            correct=c,
            time="0:00:00",
            samples=100,
            count_a=90,
            n=100,
            n0=10,
            p_lower=0.9,
            sigma=0.5,
            seconds=0.1,
        )
        for i, (r, c) in enumerate(zip(radii, correct, strict=True))
    ]


def _two_sided_by_hand(b: int, c: int) -> float:
    """min(1, 2 P(X <= min(b, c))) for X ~ Binomial(b + c, 1/2): the exact two-sided McNemar p."""
    n, k = b + c, min(b, c)
    return min(1.0, 2.0 * sum(math.comb(n, i) for i in range(k + 1)) * 0.5**n)


@pytest.mark.parametrize(("b", "c"), [(0, 5), (5, 0), (1, 4), (2, 7), (3, 3), (0, 1), (6, 10)])
def test_mcnemar_is_the_exact_binomial_two_sided_p_value(b: int, c: int) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(_two_sided_by_hand(b, c), rel=1e-12)


def test_mcnemar_b0_c5_is_two_times_a_half_to_the_fifth() -> None:
    assert mcnemar_exact(0, 5) == pytest.approx(2 * 0.5**5, rel=1e-12)
    assert mcnemar_exact(0, 0) == 1.0


def test_mcnemar_per_radius_counts_the_discordant_examples() -> None:
    # Radius 0.5: A certifies examples 0-5 correctly, B only 0 and 1: A only 4, B only 0.
    a = rows([1.0, 1.0, 0.6, 0.6, 0.6, 0.6, 0.0, 0.0], [1, 1, 1, 1, 1, 1, 0, 0])
    b = rows([1.0, 1.0, 0.2, 0.2, 0.2, 0.2, 0.7, 0.0], [1, 1, 1, 1, 1, 1, 0, 0])
    at_zero, at_half = mcnemar_per_radius(paired_rows(a, b), [0.0, 0.5])
    assert (at_zero.a_only, at_zero.b_only, at_zero.p_value) == (0, 0, 1.0)
    assert (at_half.a_only, at_half.b_only) == (4, 0)
    assert at_half.p_value == pytest.approx(2 * 0.5**4)
    assert (at_half.accuracy_a, at_half.accuracy_b) == (6 / 8, 2 / 8)


def test_bootstrap_interval_of_identical_runs_is_zero() -> None:
    a = rows([0.1 * i for i in range(20)], [i % 3 != 0 for i in range(20)])
    interval = acr_difference_interval(paired_rows(a, a), resamples=500, seed=3)
    assert (interval.difference, interval.low, interval.high) == (0.0, 0.0, 0.0)


def test_bootstrap_interval_of_a_constant_shift_is_that_shift() -> None:
    base = [0.05 * i for i in range(30)]
    a = rows([r + 0.25 for r in base], [1] * 30)
    b = rows(base, [1] * 30)
    interval = acr_difference_interval(paired_rows(a, b), resamples=500, seed=1)
    for value in (interval.difference, interval.low, interval.high):
        assert value == pytest.approx(0.25, abs=1e-12)


def test_bootstrap_is_seeded_and_brackets_the_difference() -> None:
    a = rows([0.1 * (i % 7) for i in range(40)], [i % 4 != 0 for i in range(40)])
    b = rows([0.1 * (i % 5) for i in range(40)], [i % 3 != 0 for i in range(40)])
    pairs = paired_rows(a, b)
    first, again = (acr_difference_interval(pairs, resamples=400, seed=7) for _ in range(2))
    assert first == again
    assert first.low < first.difference < first.high


def test_runs_on_different_examples_are_refused() -> None:
    a = rows([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(UnpairedRunsError, match="same examples"):
        paired_rows(a, a[:2])
    with pytest.raises(UnpairedRunsError, match="labels"):
        paired_rows(a, rows([0.1, 0.2, 0.3], [1, 1, 1], labels=[5, 5, 5]))


def test_report_paired_prints_the_tests(tmp_path: Path, capsys) -> None:
    paths = []
    for name, shift in (("a", 0.3), ("b", 0.0)):
        path = tmp_path / name / "certify.tsv"
        path.parent.mkdir()
        path.write_text(HEADER + "".join(format_row(r) for r in rows([0.1 + shift] * 6, [1] * 6)))
        paths.append(str(path))
    assert report_cli.main(["--paired", *paths, "--radii", "0", "0.25", "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    # r = 0: both certify every example, no discordant one, no test; r = 0.25 is the family of one.
    assert "| 0 | 6 | 100.0 | 100.0 | 0 | 0 | 1 | - |" in out
    assert "| 0.25 | 6 | 100.0 | 0.0 | 6 | 0 | 0.03125 | 0.03125 |" in out
    assert "family of the 1 McNemar test(s)" in out
    assert "ACR(A) - ACR(B) = 0.3000" in out and "[0.3000, 0.3000]" in out


def test_bootstrap_width_matches_the_standard_error_of_the_mean() -> None:
    # Differences 1 on half of 400 examples, 0 on the rest: mean 1/2, standard error 0.5 / sqrt(400) =
    # 0.025, so the 95% interval is close to 0.5 -+ 1.96 * 0.025 (the bootstrap's normal limit).
    a = rows([1.0] * 400, [i % 2 for i in range(400)])
    b = rows([1.0] * 400, [0] * 400)
    interval = acr_difference_interval(paired_rows(a, b), resamples=4000, seed=0)
    assert interval.difference == 0.5
    assert interval.low == pytest.approx(0.5 - 1.96 * 0.025, abs=0.006)
    assert interval.high == pytest.approx(0.5 + 1.96 * 0.025, abs=0.006)


def test_holm_runs_over_the_radii_that_have_a_test() -> None:
    # Raw p 0.01, 0.04, 0.03 at three radii with discordant examples, none at r = 0.25. By hand over the
    # family of 3: 3 * 0.01 = 0.03; 2 * 0.03 = 0.06; 1 * 0.04 = 0.04, raised to 0.06 (step-down monotone).
    tests = [
        McNemarResult(0.0, 100, 0.9, 0.8, 9, 1, 0.01),
        McNemarResult(0.25, 100, 0.8, 0.8, 0, 0, 1.0),
        McNemarResult(0.5, 100, 0.7, 0.6, 8, 2, 0.04),
        McNemarResult(0.75, 100, 0.6, 0.5, 9, 2, 0.03),
    ]
    adjusted, family = holm_over_radii(tests)
    assert family == 3
    assert adjusted == [pytest.approx(0.03), None, pytest.approx(0.06), pytest.approx(0.06)]
