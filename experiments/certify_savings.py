"""Noisy copies a multi-classifier sequential certification used, against the alternatives.

For each folder of one multi-classifier run (the certify.<name>.tsv files it wrote, every classifier on
the same examples), it counts from the rows alone:

  multi, sequential    the copies drawn (and denoised) per example: as many as the classifier that
                       needed the most used, since one batch serves all of them;
  separate, sequential each classifier in its own run, stopping on its own (the sum of their samples);
  multi, fixed         n0 + n copies per example, shared;
  separate, fixed      k runs of n0 + n copies per example (the usual way: Cohen et al.'s CERTIFY per model).

    python experiments/certify_savings.py outputs/mnist5k_reproduce/certify/sigma0.5/dds --n0 100

Copies are what the denoiser (and, without one, the classifiers) run on; time on a GPU also depends on
the per-look work of the sequential decisions (certify_multi_timing.py measures both).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ddsx.certification.result_file import read_results


def copies(folder: Path, n0: int) -> dict[str, float]:
    files = sorted(folder.glob("certify*.tsv"))
    if not files:
        raise SystemExit(f"no certify*.tsv in {folder}")
    runs = [read_results(path) for path in files]
    examples = {row.idx for row in runs[0]}
    if any({row.idx for row in rows} != examples for rows in runs):
        raise SystemExit(f"{folder}: the files do not hold the same examples")
    budget = {row.n for rows in runs for row in rows}
    if len(budget) != 1 or None in budget:
        raise SystemExit(f"{folder}: the rows do not share one n ({sorted(map(str, budget))})")
    n = budget.pop()
    used = [{row.idx: row.samples + (row.n0 or 0) for row in rows} for rows in runs]
    return {
        "classifiers": len(files),
        "examples": len(examples),
        "n": n,
        "multi_sequential": sum(max(u[idx] for u in used) for idx in examples),
        "separate_sequential": sum(sum(u.values()) for u in used),
        "multi_fixed": len(examples) * (n0 + n),
        "separate_fixed": len(files) * len(examples) * (n0 + n),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders of multi-classifier runs")
    parser.add_argument(
        "--n0", type=int, default=100, help="n0 of the fixed-n alternative (Cohen et al.: 100)"
    )
    args = parser.parse_args()
    print(
        "| run | classifiers | examples | n | multi, sequential | separate, sequential | multi, fixed "
        "| separate, fixed | saved vs separate, fixed |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    total = {"multi_sequential": 0, "separate_fixed": 0}
    for folder in args.folders:
        c = copies(folder, args.n0)
        total["multi_sequential"] += c["multi_sequential"]
        total["separate_fixed"] += c["separate_fixed"]
        print(
            f"| {folder} | {c['classifiers']} | {c['examples']} | {c['n']:,} | {c['multi_sequential']:,} "
            f"| {c['separate_sequential']:,} | {c['multi_fixed']:,} | {c['separate_fixed']:,} "
            f"| {1 - c['multi_sequential'] / c['separate_fixed']:.1%} |"
        )
    if len(args.folders) > 1:
        saved = 1 - total["multi_sequential"] / total["separate_fixed"]
        print(
            f"| all | | | | {total['multi_sequential']:,} | | | {total['separate_fixed']:,} | {saved:.1%} |"
        )


if __name__ == "__main__":
    main()
