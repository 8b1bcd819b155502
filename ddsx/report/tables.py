"""Tables of certified accuracy: one row per run, plus the best-over-sigma envelope per method."""

from __future__ import annotations

from collections.abc import Sequence

from ddsx.certification.metrics import summarize
from ddsx.report.runs import Run

Table = tuple[list[str], list[list[str]]]


def summary_table(runs: Sequence[Run], radii: Sequence[float], names: Sequence[str] | None = None) -> Table:
    """Header and rows: run, sigma, examples, certified accuracy at each radius, ACR, abstain, clean acc.

    ``names`` replaces the run column (default: each run's group, i.e. its label without sigma).
    """
    header = ["run", "sigma", "N", *[f"r={r:g}" for r in radii], "ACR", "abstain", "clean acc"]
    rows = []
    for i, run in enumerate(runs):
        s = summarize(run.rows, radii)
        rows.append(
            [
                run.group if names is None else names[i],
                "?" if run.sigma is None else f"{run.sigma:g}",
                str(len(run.rows)),
                *[_pct(s[f"acc@{r:g}"]) for r in radii],
                f"{s['acr']:.3f}",
                _pct(s["abstain"]),
                _pct(s["clean_acc"]),
            ]
        )
    return header, rows


def envelope_table(runs: Sequence[Run], radii: Sequence[float]) -> Table:
    """Best certified accuracy over sigma at each radius, per group (method, denoiser, dataset).

    Each cell also names the sigma that achieves it, as in Cohen et al. and Salman et al.
    """
    header = ["run", *[f"r={r:g}" for r in radii], "best ACR"]
    rows = []
    for group in dict.fromkeys(run.group for run in runs):
        members = [run for run in runs if run.group == group and run.rows]
        if not members:
            continue
        summaries = [(run, summarize(run.rows, radii)) for run in members]
        cells = []
        for r in radii:
            run, s = max(summaries, key=lambda item, key=f"acc@{r:g}": item[1][key])
            cells.append(f"{_pct(s[f'acc@{r:g}'])} ({_sigma(run)})")
        run, s = max(summaries, key=lambda item: item[1]["acr"])
        rows.append([group, *cells, f"{s['acr']:.3f} ({_sigma(run)})"])
    return header, rows


def envelope_curve(runs: Sequence[Run], radii: Sequence[float]) -> list[float]:
    """Pointwise maximum of certified accuracy over ``runs`` at each radius."""
    return [max(summarize(run.rows, [r])[f"acc@{r:g}"] for run in runs) for r in radii]


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
