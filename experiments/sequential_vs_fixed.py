"""Fixed-n CERTIFY against sequential SEQ-CERT on the same test digits (issue 10, docs/sequential.md).

For each sigma, each of the first ``--digits`` test digits of mnist5k is certified twice with the public
Smooth API and the example's own noise generator (seed, idx):
  fixed:       Smooth.certify(n0, n = budget, alpha)              (Cohen et al.'s CERTIFY)
  sequential:  Smooth.certify_sequential(label = true label)      (SEQ-CERT, budget n_max = n)
Rows are appended to ``rows.tsv`` as they finish (the script resumes: finished (sigma, digit, mode)
rows are skipped), and the markdown tables are rewritten from all rows after every digit.

    python experiments/sequential_vs_fixed.py --runs outputs/sequential --out experiments/results/sequential
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import time
from pathlib import Path

import torch

from ddsx.data.mnist5k import MNIST5kDataModule
from ddsx.models.checkpoints import load_classifier
from ddsx.models.pipeline import DenoisedClassifier
from ddsx.smoothing import Smooth, example_generator, sequential_plan

# The engine's default report grid (ddsx/certification/settings.py DEFAULT_RADII).
RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
COLUMNS = ("sigma", "idx", "label", "mode", "prediction", "radius", "count", "samples", "n0", "seconds")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=Path, required=True, help="folder with lenet_sigma<S>/checkpoints/last.ckpt"
    )
    parser.add_argument("--out", type=Path, required=True, help="results folder (rows.tsv and tables)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--digits", type=int, default=200, help="the first N digits of the test split")
    parser.add_argument(
        "--start", type=int, default=0, help="begin at this digit (a second worker can take the upper half)"
    )
    parser.add_argument("--n", type=int, default=100_000, help="fixed n, and the sequential budget n_max")
    parser.add_argument("--n0", type=int, default=100, help="selection copies of fixed CERTIFY")
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--check-every", type=int, default=100, help="sequential check interval")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: best on a shared machine)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (noise streams differ between them)")
    parser.add_argument("--tables-only", action="store_true", help="only rewrite the tables from rows.tsv")
    return parser.parse_args()


def read_rows(path: Path) -> list[dict]:
    """Rows of a previous run; every field parsed as a plain number (a file never chooses code)."""
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as handle:
        for raw in csv.DictReader(handle, delimiter="\t"):
            rows.append(
                {
                    "sigma": float(raw["sigma"]),
                    "idx": int(raw["idx"]),
                    "label": int(raw["label"]),
                    "mode": str(raw["mode"]),
                    "prediction": int(raw["prediction"]),
                    "radius": float(raw["radius"]),
                    "count": int(raw["count"]),
                    "samples": int(raw["samples"]),
                    "n0": int(raw["n0"]),
                    "seconds": float(raw["seconds"]),
                }
            )
    return rows


def append_row(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS, delimiter="\t")
        if new:
            writer.writeheader()
        writer.writerow(row)


def certified_accuracy(rows: list[dict], r: float) -> float:
    return sum(row["prediction"] == row["label"] and row["radius"] >= r for row in rows) / len(rows)


def write_tables(rows: list[dict], args: argparse.Namespace) -> None:
    lines = [
        "# Fixed-n CERTIFY vs sequential SEQ-CERT (mnist5k, LeNet trained with Gaussian noise, no denoiser)",
        "",
        f"alpha = {args.alpha}; fixed: n0 = {args.n0}, n = {args.n:,}; sequential: label mode (no n0), "
        f"budget n_max = {args.n:,}, checks every {args.check_every} samples; noise seed {args.seed}, "
        "each digit's noise from its own (seed, idx) generator.",
        "Certified accuracy at r: fraction of digits whose prediction is the label with radius >= r "
        "(sequential: certified at grid radius r). Samples per point: noisy copies classified "
        "(fixed: n0 + n).",
        "",
    ]
    for sigma in args.sigmas:
        fixed = {r["idx"]: r for r in rows if r["sigma"] == sigma and r["mode"] == "fixed"}
        seq = {r["idx"]: r for r in rows if r["sigma"] == sigma and r["mode"] == "sequential"}
        both = sorted(set(fixed) & set(seq))
        status = "complete" if len(both) >= args.digits else "PARTIAL"
        lines += [f"## sigma = {sigma} ({len(both)} of {args.digits} digits, {status})", ""]
        if not both:
            lines += ["no digits yet", ""]
            continue
        f_rows, s_rows = [fixed[i] for i in both], [seq[i] for i in both]
        lines += ["| radius | fixed n | sequential | difference (points) |", "|---|---|---|---|"]
        for r in RADII:
            a, b = certified_accuracy(f_rows, r), certified_accuracy(s_rows, r)
            lines.append(f"| {r} | {100 * a:.1f}% | {100 * b:.1f}% | {100 * (b - a):+.1f} |")
        f_samples = [row["samples"] + row["n0"] for row in f_rows]
        s_samples = [row["samples"] + row["n0"] for row in s_rows]
        f_mean, s_mean = statistics.fmean(f_samples), statistics.fmean(s_samples)
        f_time, s_time = (
            statistics.fmean(r["seconds"] for r in f_rows),
            statistics.fmean(r["seconds"] for r in s_rows),
        )
        lines += [
            "",
            "| samples per point | fixed n | sequential | ratio |",
            "|---|---|---|---|",
            f"| mean | {f_mean:,.0f} | {s_mean:,.0f} | x{f_mean / s_mean:.1f} |",
            f"| median | {statistics.median(f_samples):,.0f} | {statistics.median(s_samples):,.0f} | "
            f"x{statistics.median(f_samples) / statistics.median(s_samples):.1f} |",
            f"| seconds (mean, on the machine in README.md) | {f_time:.3f} | {s_time:.3f} | x{f_time / s_time:.1f} |",
            "",
        ]
    (args.out / "results.md").write_text("\n".join(lines))


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows_path = args.out / "rows.tsv"
    rows = read_rows(rows_path)
    if args.tables_only:
        write_tables(rows, args)
        return
    done = {(r["sigma"], r["idx"], r["mode"]) for r in rows}
    torch.set_num_threads(args.threads)
    data = MNIST5kDataModule()
    data.build()
    test_set = data.test_set
    device = torch.device(args.device)
    models = {}
    for sigma in args.sigmas:
        classifier, config = load_classifier(args.runs / f"lenet_sigma{sigma}" / "checkpoints" / "last.ckpt")
        if not math.isclose(float(config["sigma"]), sigma):
            raise ValueError(f"lenet_sigma{sigma} was trained at sigma {config['sigma']}")
        smooth = Smooth(DenoisedClassifier(classifier).to(device).eval(), data.num_classes, sigma)
        plan = sequential_plan(sigma, RADII, args.alpha, args.n, args.check_every)
        models[sigma] = (smooth, plan)
    # Digits outermost: a partial run has the same digits at every sigma.
    for idx in range(args.start, args.digits):
        x, label = test_set[idx]
        x, label = x.to(device), int(label)
        for sigma in args.sigmas:
            smooth, plan = models[sigma]
            for mode in ("fixed", "sequential"):
                if (sigma, idx, mode) in done:
                    continue
                generator = example_generator(args.seed, idx, device)
                start = time.perf_counter()
                if mode == "fixed":
                    cert = smooth.certify(
                        x, args.n0, args.n, args.alpha, args.batch_size, generator=generator
                    )
                    samples = cert.n
                else:
                    cert = smooth.certify_sequential(
                        x, plan, label=label, batch_size=args.batch_size, generator=generator
                    )
                    samples = cert.samples
                row = dict(
                    sigma=sigma, idx=idx, label=label, mode=mode, prediction=cert.prediction,
                    radius=cert.radius, count=cert.count, samples=samples, n0=cert.n0,
                    seconds=round(time.perf_counter() - start, 3),
                )  # fmt: skip
                append_row(rows_path, row)
                rows.append(row)
        write_tables(rows, args)
        print(f"digit {idx + 1}/{args.digits} done", flush=True)
    write_tables(rows, args)


if __name__ == "__main__":
    main()
