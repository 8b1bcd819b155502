"""Tables of certified accuracy: one row per run, plus the best-over-sigma envelope per method."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ddsx.certification.metrics import summarize
from ddsx.report.runs import Run, envelope_groups
from ddsx.report.wandb_offline import WandbRun

Table = tuple[list[str], list[list[str]]]


BEYOND = "-"  # a radius no certificate of the run can reach (see BEYOND_NOTE)
BEYOND_NOTE = (
    "-: beyond the largest radius certifiable at this n and alpha, sigma * PhiInv(alpha^(1/n)) "
    "(all n samples on the top class); no run could have certified it."
)
CEILING = "^"  # the radius where the run's certificates are capped (see CEILING_NOTE)
CEILING_NOTE = (
    "^: the largest radius the run's test can report (for sequential runs the largest radius of the "
    "certification grid within sigma * PhiInv(alpha^(1/n))): every digit certified further is counted "
    "here, so methods that both reach the cap look alike at it whatever their margins."
)
ACR_NOTE = (
    "ACR comes after the accuracies on purpose: one average that a method can raise by pushing a few "
    "digits far while losing digits at the radii that matter; exact: the mean certified radius of a "
    "fixed-n test; grid: the mean of the largest grid radius certified (sequential), a floor of the exact ACR."
)
GRID_NOTE = (
    "grid: sequential runs certify the radii of a grid; their ACR is the mean of the largest grid radius "
    "certified (a lower bound on the exact ACR)."
)


def summary_table(runs: Sequence[Run], radii: Sequence[float], names: Sequence[str] | None = None) -> Table:
    """Header and rows: run, sigma, examples, n, alpha, mode, certified accuracy at each radius, ACR,
    abstain, clean acc, samples per point (mean / median), status.

    ``names`` replaces the run column (default: each run's group, i.e. its label without sigma). A run
    with a problem (empty, incomplete, torn, mixed sigmas) shows its status and no numbers.
    """
    header = ["run", "sigma", "examples", "n", "alpha", "mode", *[f"r={r:g}" for r in radii]]
    header += ["ACR", "abstain", "clean acc", "samples mean", "samples median", "status"]
    rows = []
    for i, run in enumerate(runs):
        row = [
            run.group if names is None else names[i],
            _sigma_cell(run),
            str(len(run.rows)),
            "?" if run.n is None else str(run.n),
            "?" if run.alpha is None else f"{run.alpha:g}",
            run.mode,
        ]
        if run.problem:
            rows.append(row + ["-"] * (len(radii) + 5) + [run.problem])
            continue
        s = summarize(run.rows, radii)
        acr = f"{s['acr']:.3f}" + (" grid" if run.grid else "")
        if run.samples:
            samples = [f"{run.samples_mean:.0f}", f"{run.samples_median:.0f}"]
        else:  # a fixed-n run spends n samples on every point
            samples = ["?" if run.n is None else str(run.n)] * 2
        row += [_cell(s[f"acc@{r:g}"], r, run) for r in radii]
        rows.append(row + [acr, _pct(s["abstain"]), _pct(s["clean_acc"]), *samples, run.status])
    return header, rows


def envelope_table(runs: Sequence[Run], radii: Sequence[float]) -> Table:
    """Best certified accuracy over sigma at each radius, one row per set of runs that differ in sigma
    alone (:func:`envelope_groups`). Each cell also names the sigma that achieves it, as in Cohen et al.
    and Salman et al."""
    header = ["run", "n", "alpha", "sigmas", *[f"r={r:g}" for r in radii], "best ACR"]
    rows = []
    for members in envelope_groups(runs):
        summaries = [(run, summarize(run.rows, radii)) for run in members]
        cells = []
        for r in radii:
            reachable = [(run, s) for run, s in summaries if run.max_radius is None or r <= run.max_radius]
            if not reachable:
                cells.append(BEYOND)
                continue
            run, s = max(reachable, key=lambda item, key=f"acc@{r:g}": item[1][key])
            cells.append(f"{_pct(s[f'acc@{r:g}'])} ({_sigma(run)})")
        run, s = max(summaries, key=lambda item: item[1]["acr"])
        first = members[0]
        rows.append(
            [
                first.group,
                str(first.n),
                f"{first.alpha:g}" if first.alpha is not None else "?",
                ",".join(f"{m.sigma:g}" for m in members),
                *cells,
                f"{s['acr']:.3f} ({_sigma(run)})",
            ]
        )
    return header, rows


def wandb_table(runs: Sequence[WandbRun], radii: Sequence[float]) -> Table:
    """One row per offline W&B run: name, group, job type, tags, exit code and its ``cert/*`` summary."""
    header = ["W&B run", "group", "job", "tags", "exit", *[f"r={r:g}" for r in radii], "ACR", "samples mean"]
    rows = []
    for run in runs:
        summary = run.summary
        cells = [_pct_or_dash(summary.get(f"cert/acc@{r:g}")) for r in radii]
        acr = summary.get("cert/acr")
        samples = summary.get("cert/samples_mean")
        rows.append(
            [
                run.name or run.run_id,
                run.group,
                run.job_type,
                " ".join(run.tags),
                "?" if run.exit_code is None else str(run.exit_code),
                *cells,
                f"{acr:.3f}" if isinstance(acr, int | float) else "-",
                f"{samples:.0f}" if isinstance(samples, int | float) else "-",
            ]
        )
    return header, rows


def _pct_or_dash(value: object) -> str:
    return _pct(float(value)) if isinstance(value, int | float) else "-"


def envelope_curve(runs: Sequence[Run], radii: Sequence[float]) -> list[float]:
    """Pointwise maximum of certified accuracy over ``runs`` at each radius."""
    return [max(summarize(run.rows, [r])[f"acc@{r:g}"] for run in runs) for r in radii]


def compare_table(a: Run, b: Run, radii: Sequence[float]) -> tuple[Table, str]:
    """Per radius the certified accuracy of runs ``a`` and ``b`` on the examples both certified, and a
    line with the samples per point of each and their ratio."""
    common = {row.idx for row in a.rows} & {row.idx for row in b.rows}
    rows_a = [row for row in a.rows if row.idx in common]
    rows_b = [row for row in b.rows if row.idx in common]
    sa, sb = summarize(rows_a, radii), summarize(rows_b, radii)
    header = ["radius", f"A ({a.mode})", f"B ({b.mode})", "B - A"]
    rows = [
        [f"{r:g}", _pct(sa[f"acc@{r:g}"]), _pct(sb[f"acc@{r:g}"]), _diff(sa[f"acc@{r:g}"], sb[f"acc@{r:g}"])]
        for r in radii
    ]
    mean_a, mean_b = _mean_samples(a, common), _mean_samples(b, common)
    ratio = f"{mean_a / mean_b:.2f}" if mean_a and mean_b else "?"
    line = (
        f"{len(common)} common examples; samples per point (after n0): A mean {_num(mean_a)}, "
        f"B mean {_num(mean_b)}; ratio A/B = {ratio}"
    )
    return (header, rows), line


def _mean_samples(run: Run, common: set[int]) -> float | None:
    """Mean samples per point over ``common``: the samples column, else n (fixed mode spends n each)."""
    if run.samples:
        used = [s for row, s in zip(run.rows, run.samples, strict=False) if row.idx in common]
        return sum(used) / len(used) if used else None
    ns = [row.n if row.n is not None else run.n for row in run.rows if row.idx in common]
    ns = [n for n in ns if n is not None]
    return sum(ns) / len(ns) if ns else None


def _cell(value: float, radius: float, run: Run) -> str:
    if run.max_radius is not None and radius > run.max_radius:
        return BEYOND
    return _pct(value) + (f" {CEILING}" if run.at_ceiling(radius) else "")


def _diff(a: float, b: float) -> str:
    return "-" if a != a or b != b else f"{100 * (b - a):+.1f}"


def _num(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def to_markdown(table: Table) -> str:
    header, rows = table
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_latex(table: Table, caption: str = "") -> str:
    """A booktabs ``tabular`` (LaTeX special characters escaped)."""
    header, rows = table
    body = [" & ".join(_latex_escape(c) for c in header) + r" \\", r"\midrule"]
    body += [" & ".join(_latex_escape(c) for c in row) + r" \\" for row in rows]
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(r"\caption{" + _latex_escape(caption) + "}")
    lines += [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule", *body[:1], *body[1:]]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.1f}"


def _sigma_cell(run: Run) -> str:
    """The certified sigma, and the training sigma where it differs (a model certified off its sigma)."""
    if run.sigma is None:
        return "?"
    if run.train_sigma is not None and not math.isclose(run.train_sigma, run.sigma):
        return f"{run.sigma:g} (trained {run.train_sigma:g})"
    return f"{run.sigma:g}"


def _sigma(run: Run) -> str:
    return "sigma=?" if run.sigma is None else f"sigma={run.sigma:g}"


def _latex_escape(text: str) -> str:
    replacements = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
    }
    return "".join(replacements.get(ch, ch) for ch in text)
