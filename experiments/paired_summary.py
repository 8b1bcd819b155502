"""One line per (sigma, pair of methods, training seed) of the paired tests of a multi-classifier run.

Reads the certify.<method>_seed<k>.tsv files of each sigma's folder (same digits, same noise) through
the report's validated reader and prints a markdown table: the ACR difference with its 95% paired
bootstrap interval, and the radii where McNemar's exact test finds one method ahead at an uncorrected
p < 0.05 (with that p; "*" where Holm's correction over the whole family below keeps it under 0.05).
The full per-radius tables are ddsx-report --paired's.
A second table takes the training seeds as the unit: the mean ACR of each method over its seeds and
Welch's t-test of the two sets of per-seed ACRs (the seed-to-seed spread, which the per-seed paired tests
above do not see, is its noise); its random-effects pooling is ddsx-report --compare-methods'.

The family of Holm's correction is every test this summary reports on: each McNemar test with a
discordant digit (every sigma, pair, seed and radius, listed or not) and each Welch test; its size is
printed. The statistics are ddsx.report.run_level's and ddsx.report.paired's.

    python experiments/paired_summary.py outputs/mnist5k_reproduce/certify --pairs dds_adv:dds_finetune \
        --seeds 0 1 2 --radii 0 0.5 1.0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ddsx.cli.errors import console_script
from ddsx.errors import DDSXError
from ddsx.report.paired import McNemarResult, certified_radii, paired_report
from ddsx.report.run_level import Welch, holm, welch
from ddsx.report.runs import load_run

LEVEL = 0.05


def ahead(tests: Sequence[McNemarResult], adjusted: Sequence[float | None], first: bool) -> str:
    """The radii where A (first) or B is ahead at an uncorrected p < LEVEL, with that p and a star where
    the Holm-adjusted p (``adjusted``, None for a radius without a test) is below LEVEL too."""
    cells = []
    for t, corrected in zip(tests, adjusted, strict=True):
        leads = t.a_only > t.b_only if first else t.b_only > t.a_only
        if leads and t.p_value < LEVEL:
            star = "*" if corrected is not None and corrected < LEVEL else ""
            cells.append(f"{t.radius:g} ({t.p_value:.1g}{star})")
    return ", ".join(cells) or "none"


def family_adjusted(
    per_line: Sequence[Sequence[McNemarResult]], seed_level: Sequence[Welch | None]
) -> tuple[list[list[float | None]], list[float | None], int]:
    """Holm over every McNemar test with a discordant digit and every Welch test: the adjusted p-values
    in the shape given (None where there is no test) and the family size."""
    raw = [t.p_value for tests in per_line for t in tests if t.a_only + t.b_only > 0]
    raw += [w.p_value for w in seed_level if w is not None]
    adjusted = iter(holm(raw))
    tests_adjusted = [
        [next(adjusted) if t.a_only + t.b_only > 0 else None for t in tests] for tests in per_line
    ]
    welch_adjusted = [next(adjusted) if w is not None else None for w in seed_level]
    return tests_adjusted, welch_adjusted, len(raw)


def _rows(path: Path):
    run = load_run(path)
    if run.problem:
        raise DDSXError(f"{path}: {run.problem}; a paired summary needs whole runs")
    return run.rows


@console_script  # an unreadable or incomplete file: one line, exit 2
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder with sigma<s>/<run>/certify.<method>_seed<k>.tsv")
    parser.add_argument("--run", default="dds", help="the multi-classifier run folder in each sigma folder")
    parser.add_argument("--sigmas", nargs="+", default=["0.25", "0.5", "1.0"])
    parser.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    parser.add_argument("--pairs", nargs="+", required=True, help="a:b method pairs (A vs B)")
    parser.add_argument("--radii", nargs="+", type=float, required=True)
    parser.add_argument("--resamples", type=int, default=10_000)
    args = parser.parse_args(argv)
    lines, seed_level = [], []
    for sigma in args.sigmas:
        folder = args.root / f"sigma{sigma}" / args.run
        for pair in args.pairs:
            a, b = pair.split(":")
            acrs: dict[str, list[float]] = {a: [], b: []}
            for seed in args.seeds:
                rows_a = _rows(folder / f"certify.{a}_seed{seed}.tsv")
                rows_b = _rows(folder / f"certify.{b}_seed{seed}.tsv")
                tests, interval = paired_report(rows_a, rows_b, args.radii, args.resamples, seed=0)
                lines.append((sigma, a, b, seed, tests, interval))
                for name, rows in ((a, rows_a), (b, rows_b)):
                    acrs[name].append(float(certified_radii(rows).mean()))
            test = welch(acrs[a], acrs[b]) if len(args.seeds) > 1 else None
            seed_level.append((sigma, a, b, sum(acrs[a]) / len(acrs[a]), sum(acrs[b]) / len(acrs[b]), test))
    tests_adjusted, welch_adjusted, family = family_adjusted(
        [line[4] for line in lines], [entry[5] for entry in seed_level]
    )
    print("| sigma | A vs B | seed | ACR(A) - ACR(B) [95% CI] | A ahead at r (p) | B ahead at r (p) |")
    print("|---|---|---|---|---|---|")
    for (sigma, a, b, seed, tests, interval), adjusted in zip(lines, tests_adjusted, strict=True):
        print(
            f"| {sigma} | {a} vs {b} | {seed} | {interval.difference:+.3f} "
            f"[{interval.low:+.3f}, {interval.high:+.3f}] | {ahead(tests, adjusted, True)} | "
            f"{ahead(tests, adjusted, False)} |"
        )
    print("\n| sigma | A vs B | mean ACR A | mean ACR B | difference | Welch p over seeds | Holm p |")
    print("|---|---|---|---|---|---|---|")
    for (sigma, a, b, mean_a, mean_b, test), corrected in zip(seed_level, welch_adjusted, strict=True):
        p = f"{test.p_value:.2g}" if test else "-"
        holm_p = f"{corrected:.2g}" if corrected is not None else "-"
        print(
            f"| {sigma} | {a} vs {b} | {mean_a:.3f} | {mean_b:.3f} | {mean_a - mean_b:+.3f} | {p} | {holm_p} |"
        )
    mcnemar = sum(1 for tests in tests_adjusted for t in tests if t is not None)
    print(
        f"\nThe p-values in parentheses and the Welch column are uncorrected (two-sided). Holm's step-down "
        f"correction runs over one family of {family} tests: the {mcnemar} McNemar tests with a discordant "
        f"digit (every sigma, pair, seed and radius, listed above or not) and the "
        f"{family - mcnemar} Welch tests; *: Holm-adjusted p < {LEVEL:g}. The bootstrap intervals are not "
        f"tests and are not corrected."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
