"""ddsx-report: tables and plots of certified accuracy from certification result files.

    ddsx-report outputs/certify/<run>                 # one run folder
    ddsx-report multirun/certify/<sweep> --out figs   # every run of a sweep (searched recursively)
    ddsx-report a/certify.tsv b/certify.tsv --radii 0 0.5 1
    ddsx-report --compare fixed/certify.tsv sequential/certify.tsv
    ddsx-report --paired dds_adv/certify.tsv dds_finetune/certify.tsv   # McNemar per radius, ACR interval
    ddsx-report results/certify --compare-methods dds_adv dds_finetune   # over training seeds (run level)

In a multirun folder each run is labelled by the overrides that differ across its jobs (e.g.
``method=dds_adv attack.step_size=0.1 sigma=0.5``), with one table and one plot per sigma. Offline W&B
runs (``wandb/offline-run-*``) under the given folders are listed with their group, tags and the
certification summary they logged, read from their files without any network.

Prints the markdown tables and writes report.md, report.tex, certified_accuracy.png and .pdf.
An unreadable result file, or one with a row that cannot belong to its run (the validator resume and
merge use: file and line named), stops the report (exit 2) unless --skip-bad; empty, incomplete, torn
or mixed-sigma files are listed with their status and never averaged; a file without settings is shown
as "settings unknown" and never averaged with the others.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ddsx.certification.settings import DEFAULT_RADII
from ddsx.cli.errors import DDSXError, console_script
from ddsx.report.method_compare import Comparison, compare_methods, comparison_notes, comparison_tables
from ddsx.report.paired import paired_markdown, paired_report
from ddsx.report.plots import write_plots
from ddsx.report.run_level import ALTERNATIVES
from ddsx.report.runs import ENVELOPE_FIELDS, BadFile, Run, load_run, load_runs
from ddsx.report.seeds import seed_groups, seed_table
from ddsx.report.tables import (
    ACR_NOTE,
    BEYOND_NOTE,
    CEILING_NOTE,
    GRID_NOTE,
    compare_table,
    envelope_table,
    summary_table,
    to_latex,
    to_markdown,
    wandb_table,
)
from ddsx.report.wandb_offline import WandbRun, find_runs, read_run

NOTE = (
    "Certified accuracy (%) at l2 radius r (in [0,1] pixel units); ACR = average certified radius; "
    "clean acc = certified accuracy at r = 0 (smoothed prediction correct, abstentions wrong); "
    "examples = rows in the file; n = Monte Carlo samples per example, alpha = failure probability."
)
SEEDS_NOTE = (
    "mean ± sample standard deviation [{level}% t interval of the mean] of certified accuracy (%) over runs "
    "that differ only in the seed their classifier was trained with (same method, sigma, digits, n, alpha "
    "and certification noise)."
)
GROUPING = (
    "An envelope takes the best over runs that differ in sigma alone: same "
    + ", ".join(name.replace("_", " ") for name in ENVELOPE_FIELDS)
    + ". Runs with a status other than ok, and sets with two runs at one sigma, get no envelope."
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ddsx-report",
        description=__doc__.split("\n\n")[0],
        epilog="--debug shows the traceback of an error.",
    )
    parser.add_argument("paths", nargs="*", help="result files (.tsv), run folders or multirun folders")
    parser.add_argument(
        "--radii", nargs="+", type=float, default=list(DEFAULT_RADII), help="radii of the table"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for report.md/.tex and the plots (default: <folder>/report for a single folder, else ./ddsx_report)",
    )
    parser.add_argument("--max-radius", type=_radius, default=None, help="x-axis limit of the plot")
    parser.add_argument("--title", default="", help="plot title")
    parser.add_argument(
        "--skip-bad", action="store_true", help="list unreadable result files instead of stopping at them"
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        default=None,
        help="two runs (files or run folders) on the same examples: certified accuracy per radius and samples ratio",
    )
    parser.add_argument(
        "--paired",
        nargs=2,
        metavar=("A", "B"),
        default=None,
        help="two runs on the same examples: McNemar's exact test per radius (raw and Holm-corrected over "
        "the radii with a discordant example) and a paired bootstrap interval for ACR(A) - ACR(B)",
    )
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples of --paired")
    parser.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="interval level: --paired's bootstrap, the seed spread's t interval, --compare-methods",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed of --paired")
    parser.add_argument(
        "--compare-methods",
        nargs=2,
        action="append",
        metavar=("A", "B"),
        default=[],
        help="two methods (the sidecar's method name) over the training seeds both were trained with: the "
        "per-seed paired difference of certified accuracy at each radius, then of ACR, pooled by "
        "DerSimonian-Laird with Hartung-Knapp, and Welch's test of the per-run values; Holm over every "
        "test printed (repeatable)",
    )
    parser.add_argument(
        "--average-sigmas",
        nargs="+",
        type=float,
        default=[],
        metavar="SIGMA",
        help="--compare-methods also averages these sigmas per digit (e.g. 0.5 1.0)",
    )
    parser.add_argument(
        "--alternative",
        choices=ALTERNATIVES,
        default="two-sided",
        help="the p-values of --compare-methods: greater tests H1: A > B",
    )
    args = parser.parse_args(argv)
    if not args.paths and not args.compare and not args.paired:
        parser.error("give result files or folders, or --compare A B, or --paired A B")
    return args


def _radius(text: str) -> float:
    """A finite number > 0 (argparse refuses anything else in one line, exit 2)."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite radius > 0")
    return value


def build_report(
    runs: Sequence[Run],
    radii: Sequence[float],
    out: Path | None = None,
    bad: Sequence[BadFile] = (),
    wandb_runs: Sequence[WandbRun] = (),
    comparisons: Sequence[Comparison] = (),
    confidence: float = 0.95,
) -> tuple[str, str]:
    """(markdown, LaTeX): the spread over training seeds and the run-level comparisons first (where there
    are any), then a table per sigma (one table when all runs share it), the best-over-sigma envelopes,
    and the offline W&B runs found; paths relative to ``out``."""
    names = [
        label.replace(f" sigma={_sigma(run)}", "")
        for label, run in zip(_unique_labels(runs), runs, strict=True)
    ]
    envelope = envelope_table(runs, radii)
    notes = [NOTE, BEYOND_NOTE, CEILING_NOTE, ACR_NOTE] + (
        [GRID_NOTE] if any(run.grid for run in runs) else []
    )
    markdown, latex = _seed_sections(runs, radii, comparisons, confidence)
    for title, members in _sigma_sections(runs):
        table = summary_table([runs[i] for i in members], radii, [names[i] for i in members])
        markdown += f"## {title}\n\n{to_markdown(table)}\n"
        latex += to_latex(table, caption=f"{title}. {NOTE} {BEYOND_NOTE}") + "\n"
    markdown += "".join(f"{n}\n\n" for n in notes)
    if envelope[1]:
        markdown += f"## Best over sigma (sigma achieving each cell in brackets)\n\n{to_markdown(envelope)}\n"
        markdown += f"{GROUPING}\n\n"
        latex += to_latex(envelope, caption="Best certified accuracy over sigma. " + GROUPING)
    elif len({run.sigma for run in runs if run.averageable and run.sigma is not None}) > 1:
        # Runs at several sigmas, none of which may share an envelope: say why (one sigma: nothing to say).
        markdown += f"No best-over-sigma envelope: no two runs differ in sigma alone. {GROUPING}\n\n"
    if wandb_runs:
        markdown += "## Offline W&B runs\n\n" + to_markdown(wandb_table(wandb_runs, radii)) + "\n"
    markdown += "Runs:\n\n" + "".join(f"- {run.label}: `{_shown(run.path, out)}`\n" for run in runs)
    markdown += "".join(f"- W&B {w.name} ({w.job_type}): `{_shown(w.path, out)}`\n" for w in wandb_runs)
    if bad:
        markdown += "\nNot included:\n\n" + "".join(f"- `{_shown(b.path, out)}`: {b.reason}\n" for b in bad)
    return markdown, latex


def _seed_sections(
    runs: Sequence[Run], radii: Sequence[float], comparisons: Sequence[Comparison], confidence: float
) -> tuple[str, str]:
    """The spread over training seeds and the run-level comparisons (markdown, LaTeX); empty without seeds."""
    markdown, latex = "", ""
    groups = seed_groups(runs)
    if groups:
        table = seed_table(groups, radii, confidence)
        note = SEEDS_NOTE.format(level=f"{100 * confidence:g}")
        markdown += (
            f"## Spread over training seeds\n\n{to_markdown(table)}\n{note} {CEILING_NOTE} {ACR_NOTE}\n\n"
        )
        latex += to_latex(table, caption=f"Spread over training seeds. {note}") + "\n"
    if comparisons:
        tables, family = comparison_tables(comparisons)
        notes = comparison_notes(comparisons, family)
        markdown += "## Methods compared over training seeds\n\n"
        for title, table in tables:
            markdown += f"{title}:\n\n{to_markdown(table)}\n"
            latex += to_latex(table, caption=f"Methods compared over training seeds, {title}. {notes}") + "\n"
        markdown += f"{notes}\n\n"
    return markdown, latex


def write_report(
    runs: Sequence[Run],
    radii: Sequence[float],
    out: Path,
    max_radius: float | None = None,
    title: str = "",
    bad: Sequence[BadFile] = (),
    wandb_runs: Sequence[WandbRun] = (),
    comparisons: Sequence[Comparison] = (),
    confidence: float = 0.95,
) -> dict[str, Path]:
    """Write report.md, report.tex, certified_accuracy.png and .pdf (every run), and with several sigmas
    certified_accuracy_sigma<s>.png (the runs at each) into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    markdown, latex = build_report(runs, radii, out, bad, wandb_runs, comparisons, confidence)
    paths = {"md": out / "report.md", "tex": out / "report.tex"}
    paths["md"].write_text(markdown)
    paths["tex"].write_text(latex)
    if runs:
        paths |= write_plots(runs, out, max_radius, title)
    return paths


def compare(a: str, b: str, radii: Sequence[float]) -> str:
    """The markdown of ``--compare``: accuracy of A and B per radius, and their samples ratio."""
    run_a, run_b = (load_run(_single_file(path)) for path in (a, b))
    table, line = compare_table(run_a, run_b, radii)
    return f"A: {run_a.label} ({a})\nB: {run_b.label} ({b})\n\n{to_markdown(table)}\n{line}\n"


def paired(a: str, b: str, radii: Sequence[float], resamples: int, confidence: float, seed: int) -> str:
    """The markdown of ``--paired``: McNemar's exact test per radius, the ACR difference and its interval."""
    run_a, run_b = (load_run(_single_file(path)) for path in (a, b))
    for run in (run_a, run_b):
        if run.problem:
            raise DDSXError(f"{run.path}: {run.problem}; a paired comparison needs whole runs")
    tests, interval = paired_report(run_a.rows, run_b.rows, radii, resamples, confidence, seed)
    return f"A: {run_a.label} ({a})\nB: {run_b.label} ({b})\n\n{paired_markdown(tests, interval)}"


@console_script
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.paired:
        print(paired(*args.paired, args.radii, args.resamples, args.confidence, args.seed))
        return 0
    if args.compare:
        print(compare(*args.compare, radii=args.radii))
        return 0
    runs, bad = load_runs(args.paths)
    wandb_runs = [read_run(folder) for folder in find_runs(args.paths)]
    unreadable = [b for b in bad if b.unreadable]
    for item in bad:
        print(
            f"ddsx-report: {'warning' if item.unreadable else 'note'}: {item.path}: {item.reason}",
            file=sys.stderr,
        )
    if unreadable and not args.skip_bad:
        raise DDSXError(
            f"{len(unreadable)} unreadable result file(s), first {unreadable[0].path}: {unreadable[0].reason} "
            "(--skip-bad lists them in the report and goes on)"
        )
    if not runs and not wandb_runs:
        raise DDSXError(f"no certification files (*.tsv) or offline W&B runs under {' '.join(args.paths)}")
    for run in runs:
        if run.problem or run.caveat:
            print(f"ddsx-report: warning: {run.path}: {run.status} (shown, not averaged)", file=sys.stderr)
    comparisons = [
        comparison
        for a, b in args.compare_methods
        for comparison in _compared(
            runs, a, b, args.radii, args.average_sigmas, args.confidence, args.alternative
        )
    ]
    out = args.out or _default_out(args.paths)
    paths = write_report(
        runs, args.radii, out, args.max_radius, args.title, bad, wandb_runs, comparisons, args.confidence
    )
    print(paths["md"].read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _compared(
    runs: Sequence[Run],
    a: str,
    b: str,
    radii: Sequence[float],
    average_sigmas: Sequence[float],
    confidence: float,
    alternative: str,
) -> list[Comparison]:
    """compare_methods, refused in one line where the two methods share no training seed."""
    found = compare_methods(runs, a, b, radii, average_sigmas, confidence, alternative)
    if not found:
        methods = sorted({run.method for run in runs})
        raise DDSXError(
            f"--compare-methods {a} {b}: no training seed certified for both on the same digits and settings "
            f"(methods found: {', '.join(methods)})"
        )
    return found


def _single_file(path: str) -> Path:
    """A result file, or the one result file of a run folder."""
    candidate = Path(path)
    if candidate.is_dir():
        files = sorted(candidate.glob("*.tsv"))
        if len(files) != 1:
            raise DDSXError(f"{path} holds {len(files)} result files; give the file itself to --compare")
        return files[0]
    if not candidate.is_file():
        raise FileNotFoundError(f"no such file or folder: {path}")
    return candidate


def _shown(path: Path, out: Path | None) -> str:
    """``path`` relative to the report's folder: the report stays valid when the tree is moved or shared."""
    return os.path.relpath(path, out.resolve()) if out is not None else str(path)


def _sigma_sections(runs: Sequence[Run]) -> list[tuple[str, list[int]]]:
    """(heading, run positions): one section per sigma when the runs have several, else one for all."""
    sigmas = sorted({run.sigma for run in runs if run.sigma is not None})
    if len(sigmas) <= 1:
        return [("Certified accuracy per run", list(range(len(runs))))] if runs else []
    sections = [
        (f"Certified accuracy at sigma={sigma:g}", [i for i, run in enumerate(runs) if run.sigma == sigma])
        for sigma in sigmas
    ]
    unknown = [i for i, run in enumerate(runs) if run.sigma is None]
    return sections + ([("Certified accuracy, sigma unknown", unknown)] if unknown else [])


def _sigma(run: Run) -> str:
    return "?" if run.sigma is None else f"{run.sigma:g}"


def _default_out(paths: Sequence[str]) -> Path:
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return Path(paths[0]) / "report"
    return Path("ddsx_report")


def _unique_labels(runs: Sequence[Run]) -> list[str]:
    """Run labels, with n where runs differ in it, and the file's folder where two would still agree."""
    labels = [run.label for run in runs]
    labels = [
        f"{label} n={run.n}"
        if labels.count(label) > 1 and len({r.n for r in runs if r.label == label}) > 1
        else label
        for label, run in zip(labels, runs, strict=True)
    ]
    return [
        f"{label} [{run.path.parent.name}]" if labels.count(label) > 1 else label
        for label, run in zip(labels, runs, strict=True)
    ]


if __name__ == "__main__":
    sys.exit(main())
