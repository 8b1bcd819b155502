"""One line per (sigma, pair of methods, training seed) of the paired tests of a multi-classifier run.

Reads the certify.<method>_seed<k>.tsv files of each sigma's folder (same digits, same noise) and prints a
markdown table: the ACR difference with its 95% paired bootstrap interval, and the radii where McNemar's
exact test finds one method ahead at p < 0.05 (with the p-value; "*" where it stays below 0.05 after a
Bonferroni correction over the radii tested). The full per-radius tables are ddsx-report --paired's.
A second table takes the training seeds as the unit: the mean ACR of each method over its seeds and
Welch's t-test of the two sets of per-seed ACRs (the seed-to-seed spread, which the per-seed paired tests
above do not see, is its noise).

    python experiments/paired_summary.py outputs/mnist5k_reproduce/certify --pairs dds_adv:dds_finetune \
        --seeds 0 1 2 --radii 0 0.5 1.0
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from scipy.stats import ttest_ind

from ddsx.certification.metrics import acr_term
from ddsx.certification.result_file import read_results
from ddsx.report.paired import paired_report

LEVEL = 0.05


def ahead(tests, first: bool) -> str:
    """The radii where A (first) or B is ahead at p < LEVEL, with p and a Bonferroni star."""
    cells = []
    for t in tests:
        leads = t.a_only > t.b_only if first else t.b_only > t.a_only
        if leads and t.p_value < LEVEL:
            star = "*" if t.p_value * len(tests) < LEVEL else ""
            cells.append(f"{t.radius:g} ({t.p_value:.1g}{star})")
    return ", ".join(cells) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder with sigma<s>/<run>/certify.<method>_seed<k>.tsv")
    parser.add_argument("--run", default="dds", help="the multi-classifier run folder in each sigma folder")
    parser.add_argument("--sigmas", nargs="+", default=["0.25", "0.5", "1.0"])
    parser.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    parser.add_argument("--pairs", nargs="+", required=True, help="a:b method pairs (A vs B)")
    parser.add_argument("--radii", nargs="+", type=float, required=True)
    parser.add_argument("--resamples", type=int, default=10_000)
    args = parser.parse_args()
    print("| sigma | A vs B | seed | ACR(A) - ACR(B) [95% CI] | A ahead at r (p) | B ahead at r (p) |")
    print("|---|---|---|---|---|---|")
    seed_level = []
    for sigma in args.sigmas:
        folder = args.root / f"sigma{sigma}" / args.run
        for pair in args.pairs:
            a, b = pair.split(":")
            acrs: dict[str, list[float]] = {a: [], b: []}
            for seed in args.seeds:
                rows_a = read_results(folder / f"certify.{a}_seed{seed}.tsv")
                rows_b = read_results(folder / f"certify.{b}_seed{seed}.tsv")
                tests, interval = paired_report(rows_a, rows_b, args.radii, args.resamples, seed=0)
                print(
                    f"| {sigma} | {a} vs {b} | {seed} | {interval.difference:+.3f} "
                    f"[{interval.low:+.3f}, {interval.high:+.3f}] | {ahead(tests, True)} | {ahead(tests, False)} |"
                )
                for name, rows in ((a, rows_a), (b, rows_b)):
                    acrs[name].append(statistics.fmean(acr_term(row) for row in rows))
            p = ttest_ind(acrs[a], acrs[b], equal_var=False).pvalue if len(args.seeds) > 1 else float("nan")
            seed_level.append((sigma, a, b, statistics.fmean(acrs[a]), statistics.fmean(acrs[b]), p))
    print("\n| sigma | A vs B | mean ACR A | mean ACR B | difference | Welch t-test p over seeds |")
    print("|---|---|---|---|---|---|")
    for sigma, a, b, mean_a, mean_b, p in seed_level:
        print(f"| {sigma} | {a} vs {b} | {mean_a:.3f} | {mean_b:.3f} | {mean_a - mean_b:+.3f} | {p:.2g} |")


if __name__ == "__main__":
    main()
