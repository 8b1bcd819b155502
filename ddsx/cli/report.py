"""ddsx-report: tables and plots of certified accuracy from certification result files.

    ddsx-report outputs/certify/<run>                 # one run folder
    ddsx-report multirun/certify/<sweep> --out figs   # every run of a sweep (searched recursively)
    ddsx-report a/certify.tsv b/certify.tsv --radii 0 0.5 1

Prints the markdown tables and writes report.md, report.tex, certified_accuracy.png and .pdf.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt

from ddsx.certification.settings import DEFAULT_RADII
from ddsx.cli.errors import DDSXError, console_script
from ddsx.report.plots import plot_certified_accuracy
from ddsx.report.runs import Run, load_runs
from ddsx.report.tables import envelope_table, summary_table, to_latex, to_markdown

NOTE = (
    "Certified accuracy (%) at l2 radius r (in [0,1] pixel units); ACR = average certified radius; "
    "clean acc = certified accuracy at r = 0 (smoothed prediction correct, abstentions wrong)."
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ddsx-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="result files (.tsv), run folders or multirun folders")
    parser.add_argument(
        "--radii", nargs="+", type=float, default=list(DEFAULT_RADII), help="radii of the table"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for report.md/.tex and the plots (default: <folder>/report for a single folder, else ./ddsx_report)",
    )
    parser.add_argument("--max-radius", type=float, default=None, help="x-axis limit of the plot")
    parser.add_argument("--title", default="", help="plot title")
    return parser.parse_args(argv)


def build_report(runs: Sequence[Run], radii: Sequence[float]) -> tuple[str, str]:
    """(markdown, LaTeX) of the per-run table and the best-over-sigma envelope."""
    names = [
        label.replace(f" sigma={_sigma(run)}", "")
        for label, run in zip(_unique_labels(runs), runs, strict=True)
    ]
    per_run, envelope = summary_table(runs, radii, names), envelope_table(runs, radii)
    markdown = (
        f"## Certified accuracy per run\n\n{to_markdown(per_run)}\n"
        f"## Best over sigma (sigma achieving each cell in brackets)\n\n{to_markdown(envelope)}\n{NOTE}\n\n"
        "Runs:\n\n" + "".join(f"- {run.label}: `{run.path}`\n" for run in runs)
    )
    latex = (
        to_latex(per_run, caption=NOTE)
        + "\n"
        + to_latex(envelope, caption="Best certified accuracy over sigma.")
    )
    return markdown, latex


def write_report(
    runs: Sequence[Run], radii: Sequence[float], out: Path, max_radius: float | None = None, title: str = ""
) -> dict[str, Path]:
    """Write report.md, report.tex, certified_accuracy.png and .pdf into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    markdown, latex = build_report(runs, radii)
    paths = {"md": out / "report.md", "tex": out / "report.tex"}
    paths["md"].write_text(markdown)
    paths["tex"].write_text(latex)
    labels = _unique_labels(runs)
    envelopes: dict[str, list] = {}
    for run in runs:
        envelopes.setdefault(run.group, []).append(run.rows)
    figure = plot_certified_accuracy(
        {labels[i]: run.rows for i, run in enumerate(runs)},
        envelopes={group: members for group, members in envelopes.items() if len(members) > 1},
        max_radius=max_radius,
        title=title,
    )
    for ext in ("png", "pdf"):
        paths[ext] = out / f"certified_accuracy.{ext}"
        figure.savefig(paths[ext], dpi=150)
    plt.close(figure)
    return paths


@console_script
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    runs = load_runs(args.paths)
    if not runs:
        raise DDSXError(f"no certification files (*.tsv) under {' '.join(args.paths)}")
    out = args.out or _default_out(args.paths)
    paths = write_report(runs, args.radii, out, args.max_radius, args.title)
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _sigma(run: Run) -> str:
    return "?" if run.sigma is None else f"{run.sigma:g}"


def _default_out(paths: Sequence[str]) -> Path:
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return Path(paths[0]) / "report"
    return Path("ddsx_report")


def _unique_labels(runs: Sequence[Run]) -> list[str]:
    """Run labels, with the file's folder added where two runs would share a label."""
    labels = [run.label for run in runs]
    return [
        f"{label} [{run.path.parent.name}]" if labels.count(label) > 1 else label
        for label, run in zip(labels, runs, strict=True)
    ]


if __name__ == "__main__":
    sys.exit(main())
