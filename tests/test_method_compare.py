"""ddsx-report --compare-methods: two methods over training seeds, the training run as the unit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ddsx.certification.result_file import sidecar_path
from ddsx.cli.report import build_report, main
from ddsx.report import load_runs
from ddsx.report.method_compare import (
    ACCURACY,
    ACR,
    AmbiguousRunsError,
    acr_score,
    compare_methods,
    comparison_tables,
    holm_family,
    seed_difference,
)
from ddsx.report.paired import paired_rows
from ddsx.report.run_level import holm, random_effects
from tests.test_report import write_run


def _seeded(path: Path, seed: int, mode: str | None = None, radii: list[float] | None = None) -> Path:
    identity = json.loads(sidecar_path(path).read_text())
    identity["info"]["run"]["seed"] = seed
    if radii is not None:
        identity["info"]["radii"] = radii
    sidecar_path(path).write_text(json.dumps(identity))
    return path


def _outcomes(certified: list[int], radius: float = 1.0) -> list[tuple[int, float]]:
    """Digits certified at ``radius`` (1) or wrong (0)."""
    return [(1, radius) if c else (0, 0.0) for c in certified]


# Per seed: which of 10 digits A and B certify at r = 1. Seed 0: A only on 3 digits, B only on 1;
# seed 1: A only on 1, B only on 1; seed 2: A only on 4, B only on 0.
DIGITS = {
    0: ([1, 1, 1, 1, 1, 1, 0, 0, 1, 0], [1, 1, 1, 0, 0, 0, 0, 1, 1, 0]),
    1: ([1, 1, 0, 1, 0, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 1, 1, 1, 0, 0]),
    2: ([1, 1, 1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]),
}


def _experiment(
    root: Path,
    sigma: float = 0.5,
    mode: str | None = None,
    radii: list[float] | None = None,
    radius: float = 1.0,
) -> None:
    for seed, (a, b) in DIGITS.items():
        for method, certified in (("dds_adv", a), ("dds_finetune", b)):
            path = write_run(
                root / f"sigma{sigma}" / f"{method}_{seed}",
                method,
                sigma,
                _outcomes(certified, radius),
                mode=mode,
            )
            _seeded(path, seed, radii=radii)


def test_seed_difference_is_the_paired_binomial_mean_and_its_variance(tmp_path: Path) -> None:
    _experiment(tmp_path)
    runs, _ = load_runs([tmp_path])
    a = next(r for r in runs if r.method == "dds_adv" and r.train_seed == 0)
    b = next(r for r in runs if r.method == "dds_finetune" and r.train_seed == 0)
    d, v = seed_difference([paired_rows(a.rows, b.rows)], 1.0)
    # m = 10 digits, 3 certified by A only, 1 by B only: d = 2 / 10; the e_i are 1 (x3), -1 (x1), 0 (x6),
    # so their sample variance is (sum e^2 - m d^2) / (m - 1) = (4 - 0.4) / 9 = 0.4, and v = 0.4 / 10.
    assert d == pytest.approx(0.2) and v == pytest.approx(0.04)


def test_seed_difference_averages_the_sigmas_per_digit(tmp_path: Path) -> None:
    # Digit-level e_i = (e_i(0.5) + e_i(1.0)) / 2, so digits disagreeing at one sigma count a half.
    _experiment(tmp_path, 0.5)
    _experiment(tmp_path, 1.0)
    runs, _ = load_runs([tmp_path])

    def pairs(sigma: float, seed: int):
        a = next(r for r in runs if r.method == "dds_adv" and r.train_seed == seed and r.sigma == sigma)
        b = next(r for r in runs if r.method == "dds_finetune" and r.train_seed == seed and r.sigma == sigma)
        return paired_rows(a.rows, b.rows)

    # Seed 0 at sigma 0.5 with seed 1's files at sigma 1.0: e = ((a0 - b0) + (a1 - b1)) / 2 by digit.
    d, v = seed_difference([pairs(0.5, 0), pairs(1.0, 1)], 1.0)
    a0, b0 = map(np.array, DIGITS[0])
    a1, b1 = map(np.array, DIGITS[1])
    e = ((a0 - b0) + (a1 - b1)) / 2
    assert d == pytest.approx(e.mean()) and v == pytest.approx(e.var(ddof=1) / 10)


def test_comparison_pools_the_seeds_by_dl_with_hartung_knapp_and_adds_welch(tmp_path: Path) -> None:
    _experiment(tmp_path)
    runs, _ = load_runs([tmp_path])
    [at_zero, at_one, _acr] = compare_methods(runs, "dds_adv", "dds_finetune", [0.0, 1.0])
    assert at_one.seeds == (0, 1, 2) and at_one.sigmas == (0.5,)
    # By hand from the discordant counts (A only, B only) of each seed, m = 10.
    counts = [(3, 1), (1, 1), (4, 0)]
    d = [(x - y) / 10 for x, y in counts]
    v = [(x + y - 10 * dk**2) / 9 / 10 for (x, y), dk in zip(counts, d, strict=True)]
    assert at_one.differences == pytest.approx(d) and at_one.variances == pytest.approx(v)
    expected = random_effects(d, v)
    assert at_one.pooled.estimate == pytest.approx(expected.estimate)
    assert at_one.pooled.se == pytest.approx(expected.se) and at_one.pooled.df == 2
    accuracy_a = [np.mean(DIGITS[k][0]) for k in DIGITS]
    accuracy_b = [np.mean(DIGITS[k][1]) for k in DIGITS]
    scipy_welch = stats.ttest_ind(accuracy_a, accuracy_b, equal_var=False)
    assert at_one.welch.p_value == pytest.approx(scipy_welch.pvalue)
    # Every correct digit sits at radius 1.0, so r = 0 counts the same digits as r = 1.
    assert at_zero.differences == at_one.differences
    # One-sided, H1: A > B: half the two-sided p of a positive estimate.
    [_, greater, _] = compare_methods(runs, "dds_adv", "dds_finetune", [0.0, 1.0], alternative="greater")
    assert greater.pooled.p_value == pytest.approx(at_one.pooled.p_value / 2)


def test_holm_runs_over_every_test_the_tables_print(tmp_path: Path) -> None:
    _experiment(tmp_path)
    runs, _ = load_runs([tmp_path])
    comparisons = compare_methods(runs, "dds_adv", "dds_finetune", [0.0, 0.5, 1.0])
    assert [c.measure for c in comparisons] == [ACCURACY] * 3 + [ACR]
    pooled, second, family = holm_family(comparisons)
    assert family == 8  # (3 radii + ACR) x (pooled + Welch)
    raw = [c.pooled.p_value for c in comparisons] + [c.welch.p_value for c in comparisons]
    assert pooled + second == pytest.approx(holm(raw))
    tables, size = comparison_tables(comparisons)
    assert [title for title, _ in tables] == ["Certified accuracy", "ACR"]
    [(_, (header, rows)), (_, (acr_header, acr_rows))] = tables
    assert size == 8 and len(rows) == 3 and len(acr_rows) == 1
    assert rows[0][header.index("Holm p (HK)")] == f"{holm(raw)[0]:.3g}"
    assert acr_rows[0][acr_header.index("Holm p (Welch)")] == f"{holm(raw)[7]:.3g}"
    markdown, _ = build_report(runs, [0.0, 0.5, 1.0], comparisons=comparisons)
    assert "## Methods compared over training seeds" in markdown and "over all 8 tests" in markdown
    # The ACR table comes after the certified accuracies.
    assert markdown.index("Certified accuracy:") < markdown.index("ACR:")


def test_acr_is_pooled_from_the_per_digit_radius_differences(tmp_path: Path) -> None:
    # Fixed-n files: exact ACR. Digits certified at radius 1.0, 0.5 or 0.25 in turn, so the per-digit
    # differences of certified radius are not those of certified accuracy at any one radius.
    radii = [1.0, 0.5, 0.25]
    for seed, (a, b) in DIGITS.items():
        for method, certified in (("dds_adv", a), ("dds_finetune", b)):
            outcomes = [(1, radii[i % 3]) if c else (0, 0.0) for i, c in enumerate(certified)]
            _seeded(write_run(tmp_path / f"{method}_{seed}", method, 0.5, outcomes), seed)
    runs, _ = load_runs([tmp_path])
    [acr] = [c for c in compare_methods(runs, "dds_adv", "dds_finetune", [1.0]) if c.measure == ACR]
    assert acr.radius is None and acr.acr_kind == "exact" and acr.label == "ACR (exact)"
    d, v = [], []
    for seed in DIGITS:
        a, b = (np.array(x) * np.array([radii[i % 3] for i in range(10)]) for x in DIGITS[seed])
        d.append((a - b).mean())
        v.append((a - b).var(ddof=1) / 10)
    assert acr.differences == pytest.approx(d) and acr.variances == pytest.approx(v)
    expected = random_effects(d, v)
    assert acr.pooled.estimate == pytest.approx(expected.estimate)
    assert acr.pooled.p_value == pytest.approx(expected.p_value)
    acr_a = [np.mean(np.array(DIGITS[k][0]) * [radii[i % 3] for i in range(10)]) for k in DIGITS]
    acr_b = [np.mean(np.array(DIGITS[k][1]) * [radii[i % 3] for i in range(10)]) for k in DIGITS]
    assert acr.welch.p_value == pytest.approx(stats.ttest_ind(acr_a, acr_b, equal_var=False).pvalue)
    # acr_score is the row's certified radius (dds_adv seed 0 certifies its first three digits).
    first = next(r for r in runs if r.method == "dds_adv" and r.train_seed == 0)
    assert [acr_score(row) for row in first.rows[:3]] == radii


def test_sequential_runs_are_compared_on_grid_acr(tmp_path: Path) -> None:
    _experiment(tmp_path, 0.25, mode="sequential", radii=[0.0, 0.25, 0.5, 0.75], radius=0.75)
    runs, _ = load_runs([tmp_path])
    [acr] = [c for c in compare_methods(runs, "dds_adv", "dds_finetune", [0.5]) if c.measure == ACR]
    assert acr.acr_kind == "grid"
    tables, _ = comparison_tables(compare_methods(runs, "dds_adv", "dds_finetune", [0.5]))
    title, (header, rows) = tables[1]
    assert title == "ACR" and rows[0][header.index("ACR")] == "grid"


def test_a_seed_with_no_discordant_digit_gets_no_pooled_test(tmp_path: Path) -> None:
    for seed in range(2):
        same = [1, 1, 0, 0] if seed == 0 else [1, 0, 0, 0]
        for method, certified in (("a", same), ("b", same if seed == 0 else [0, 0, 0, 1])):
            _seeded(write_run(tmp_path / f"{method}{seed}", method, 0.5, _outcomes(certified)), seed)
    runs, _ = load_runs([tmp_path])
    [c, _acr] = compare_methods(runs, "a", "b", [1.0])
    assert c.pooled is None and "seed 0" in c.note and "within variance 0" in c.note
    _, _, family = holm_family([c])
    assert family == (1 if c.welch else 0)


def test_radii_beyond_the_certifiable_maximum_are_left_out_and_the_grid_top_is_marked(tmp_path: Path) -> None:
    # Sequential (grid) runs at sigma 0.25, n = 100,000, alpha 0.001: 0.952 is certifiable; the grid's
    # largest radius within it is 0.75, the ceiling ("^"); r = 1 is beyond and not compared.
    _experiment(tmp_path, 0.25, mode="sequential", radii=[0.0, 0.25, 0.5, 0.75, 1.0], radius=0.75)
    runs, bad = load_runs([tmp_path])
    assert not bad
    assert all(math.isclose(run.ceiling_radius, 0.75) for run in runs)
    comparisons = compare_methods(runs, "dds_adv", "dds_finetune", [0.5, 0.75, 1.0])
    assert [c.radius for c in comparisons] == [0.5, 0.75, None]
    assert [c.at_ceiling for c in comparisons] == [False, True, False]
    [(_, (header, rows)), _], _ = comparison_tables(comparisons)
    assert [row[header.index("r")] for row in rows] == ["0.5", "0.75 ^"]


def test_two_runs_of_one_method_seed_and_sigma_are_refused(tmp_path: Path) -> None:
    _experiment(tmp_path)
    _seeded(write_run(tmp_path / "again", "dds_adv", 0.5, _outcomes([1] * 10)), 0)
    runs, _ = load_runs([tmp_path])
    with pytest.raises(AmbiguousRunsError, match="two runs of dds_adv with training seed 0"):
        compare_methods(runs, "dds_adv", "dds_finetune", [1.0])


def test_cli_compares_methods_and_refuses_unknown_ones_in_one_line(tmp_path: Path, capsys) -> None:
    _experiment(tmp_path / "runs")
    out = tmp_path / "report"
    args = [str(tmp_path / "runs"), "--out", str(out), "--radii", "0", "1"]
    assert main(args + ["--compare-methods", "dds_adv", "dds_finetune", "--alternative", "greater"]) == 0
    assert "one-sided, H1: A certifies more than B" in (out / "report.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(args + ["--compare-methods", "dds_adv", "gaussian"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "no training seed certified for both" in error
