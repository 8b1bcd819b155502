"""One TSV row per training run of mnist5k_reproduce.sh: its wall time and last logged metrics.

Reads <train>/sigma<s>/<method>_seed<k>/csv/metrics.csv (Lightning's CSV logger) and the .done file the
script leaves (the run's wall seconds), and prints the last value of each metric that tells whether
training worked: train accuracy and loss, the attack's delta norm (dds_adv), and the test accuracies.

    python experiments/training_summary.py outputs/mnist5k_reproduce/train > training.tsv
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

METRICS = (
    "train/acc",
    "train/loss_epoch",
    "train/delta_norm",
    "val/acc_denoised",
    "test/acc_clean",
    "test/acc_noisy",
    "test/acc_denoised",
)
RUN_NAME = re.compile(r"(?P<method>.+)_seed(?P<seed>\d+)$")


def last_values(metrics_csv: Path) -> dict[str, str]:
    """The last non-empty value of every column (Lightning writes one column group per row)."""
    last: dict[str, str] = {}
    with metrics_csv.open(newline="") as file:
        for row in csv.DictReader(file):
            last.update({key: value for key, value in row.items() if value not in ("", None)})
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train", type=Path, help="the script's train/ folder")
    args = parser.parse_args()
    print("\t".join(["sigma", "method", "seed", "wall_seconds", *METRICS]))
    for run in sorted(args.train.glob("sigma*/*")):
        name = RUN_NAME.match(run.name)
        metrics_csv = run / "csv" / "metrics.csv"
        if not name or not metrics_csv.is_file():
            continue
        done = run / ".done"
        seconds = done.read_text().split()[0] if done.is_file() else "NA"
        values = last_values(metrics_csv)
        cells = [f"{float(values[m]):.4g}" if m in values else "NA" for m in METRICS]
        sigma = run.parent.name.removeprefix("sigma")
        print("\t".join([sigma, name["method"], name["seed"], seconds, *cells]))


if __name__ == "__main__":
    main()
