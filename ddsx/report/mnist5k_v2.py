"""The pre-registered analysis of experiments/results/mnist5k_v2/PROTOCOL.md, read from the result files.

The primary endpoint exactly as the protocol defines it: per training seed k, d_k = the difference in
certified accuracy at r = 1.0 of dds_adv and dds_finetune averaged over sigma 0.5 and 1.0, with the
within-run variance v_k = the sample variance over the digits of the per-digit difference e_ki (the two
sigmas averaged per digit) divided by the digits; pooled by DerSimonian-Laird tau^2 with the
Hartung-Knapp standard error, t on k - 1 degrees of freedom, one-sided (H1: Delta > 0) at 0.05, with
Q, I^2, tau^2 and the two-sided 95% Hartung-Knapp interval; Welch's one-sided test of the per-run
accuracies (averaged over the two sigmas) as the second line. The per-seed figures and the pooling are
ddsx.report.method_compare's and ddsx.report.run_level's, the files read by ddsx.report.runs' validated
reader: this module chooses what the protocol names and says it in words.

Then the secondary analyses, each labelled, two-sided, with Holm's correction over every secondary
p-value together (the family size printed). The protocol names S1-S7 without fixing the radii of S2-S5;
this module fixes them (before any v2 result file existed):

- S1: dds_adv vs dds_finetune at sigma 0.5 and at 1.0 alone, at every grid radius, and grid ACR;
- S2, S3, S4: their pairs on the primary's measure (r = 1.0, averaged over sigma 0.5 and 1.0);
- S5: at sigma 0.25, the pairs of S1-S4 at every grid radius up to the ceiling, and grid ACR;
- S6, S7 need separate runs and are listed as not made.

    python -m ddsx.report.mnist5k_v2 experiments/results/mnist5k_v2/certify --out endpoint.md
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ddsx.cli.errors import console_script
from ddsx.errors import DDSXError
from ddsx.report.method_compare import (
    ACCURACY,
    ACR,
    Comparison,
    compare_methods,
    comparison_table,
    holm_family,
)
from ddsx.report.runs import Run, load_runs
from ddsx.report.tables import to_markdown

PRIMARY_A, PRIMARY_B = "dds_adv", "dds_finetune"
PRIMARY_SIGMAS = (0.5, 1.0)
PRIMARY_RADIUS = 1.0
PRIMARY_RUN = "primary"  # the multi-classifier run folder of each sigma that certifies the primary arms
LEVEL = 0.05
SECONDARY_SIGMA = 0.25  # S5

# The scale PROTOCOL.md fixes; a run at another scale (a smoke run) is analysed and flagged.
PROTOCOL_SEEDS = tuple(range(10))
PROTOCOL_DIGITS = 500
PROTOCOL_SETTINGS = {"n": 10_000, "alpha": 0.001, "mode": "sequential", "certify_seed": 0}
PROTOCOL_RADII = tuple(0.25 * i for i in range(13))

DDS_ARMS = ("dds_adv", "dds_finetune", "standard", "dds_adv_px")
SECONDARY_PAIRS = (
    ("S2", "dds_adv", "standard"),
    ("S2", "dds_finetune", "standard"),
    ("S3", "dds_adv_px", "dds_finetune"),
    ("S3", "dds_adv_px", "dds_adv"),
    *(("S4", arm, baseline) for baseline in ("gaussian", "smoothadv") for arm in DDS_ARMS),
)
GROUPS = {
    "S1": "the primary comparison at each sigma alone, every grid radius, grid ACR",
    "S2": "dds_adv and dds_finetune against standard, on the primary's measure",
    "S3": "dds_adv_px (sigma-scaled attack) against dds_finetune and dds_adv, on the primary's measure",
    "S4": "gaussian and smoothadv against the DDS arms, on the primary's measure",
    "S5": "sigma 0.25, every pair above, every grid radius up to the ceiling, grid ACR",
}
NOT_MADE = {
    "S6": "the paper's recipe (20 epochs, AdamW 5e-5): separate trainings, not made by this script",
    "S7": "budget n = 100,000 with the grid to the certifiable maximum: a separate certification, not made "
    "by this script",
}


class ProtocolError(DDSXError):
    """The result files cannot give the primary endpoint as PROTOCOL.md defines it."""


@dataclass(frozen=True)
class Primary:
    """The primary endpoint and how the files behind it depart from the protocol's scale."""

    comparison: Comparison  # sigmas PRIMARY_SIGMAS averaged per digit, radius 1.0, alternative greater
    digits: int
    deviations: tuple[str, ...]


def _same(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, abs_tol=1e-9)


def primary_runs(runs: Sequence[Run]) -> list[Run]:
    """The primary arms' files in the primary run folder of sigma 0.5 and 1.0; refused (ProtocolError)
    unless every one is whole and both arms have the same seeds at both sigmas."""
    chosen = [
        run
        for run in runs
        if run.path.parent.name == PRIMARY_RUN
        and run.method in (PRIMARY_A, PRIMARY_B)
        and any(_same(run.sigma, s) for s in PRIMARY_SIGMAS)
    ]
    for run in chosen:
        if not run.averageable or run.train_seed is None:
            reason = run.status if not run.averageable else "no training seed in its settings"
            raise ProtocolError(f"{run.path}: {reason}; the primary endpoint needs every file whole")
    seeds = {
        (method, sigma): sorted(r.train_seed for r in chosen if r.method == method and _same(r.sigma, sigma))
        for method in (PRIMARY_A, PRIMARY_B)
        for sigma in PRIMARY_SIGMAS
    }
    if len({tuple(s) for s in seeds.values()}) != 1 or not seeds[(PRIMARY_A, PRIMARY_SIGMAS[0])]:
        found = "; ".join(f"{m} sigma {s:g}: seeds {v or 'none'}" for (m, s), v in seeds.items())
        raise ProtocolError(
            f"the primary endpoint needs {PRIMARY_A} and {PRIMARY_B} with the same training seeds at sigma "
            f"0.5 and 1.0 in {PRIMARY_RUN}/ folders ({found})"
        )
    return chosen


def primary_endpoint(runs: Sequence[Run]) -> Primary:
    """Delta as PROTOCOL.md defines it, from the files of its primary run folders."""
    chosen = primary_runs(runs)
    found = [
        c
        for c in compare_methods(
            chosen, PRIMARY_A, PRIMARY_B, [PRIMARY_RADIUS], PRIMARY_SIGMAS, 0.95, "greater"
        )
        if c.measure == ACCURACY and c.sigmas == PRIMARY_SIGMAS
    ]
    if len(found) > 1:
        groups = " | ".join(",".join(map(str, c.seeds)) for c in found)
        raise ProtocolError(
            f"the primary files fall into {len(found)} sets that do not pair with each other (seeds {groups}): "
            "their settings or device differ"
        )
    if not found:
        raise ProtocolError(
            "the primary files of sigma 0.5 and 1.0 do not pair on the same digits and settings (dataset, "
            "split, n, alpha, mode, digits, certification seed and device must agree), or r = 1.0 is beyond "
            "what they can certify"
        )
    [comparison] = found
    every_seed = tuple(sorted({run.train_seed for run in chosen}))
    if comparison.seeds != every_seed:
        left_out = sorted(set(every_seed) - set(comparison.seeds))
        raise ProtocolError(
            f"the primary files of seeds {','.join(map(str, left_out))} do not pair with the others (their "
            "settings or device differ); the endpoint would leave them out"
        )
    if comparison.pooled is None:
        raise ProtocolError(f"the primary endpoint cannot be pooled: {comparison.note}")
    digits = {len(run.rows) for run in chosen}
    deviations = []
    if comparison.seeds != PROTOCOL_SEEDS:
        deviations.append(f"seeds {','.join(map(str, comparison.seeds))} (protocol: 0-9)")
    if digits != {PROTOCOL_DIGITS}:
        deviations.append(f"{'/'.join(map(str, sorted(digits)))} digits (protocol: {PROTOCOL_DIGITS})")
    for name, expected in PROTOCOL_SETTINGS.items():
        values = sorted({str(getattr(run, name)) for run in chosen})
        if values != [str(expected)]:
            deviations.append(f"{name} {'/'.join(values)} (protocol: {expected})")
    if comparison.at_ceiling:
        deviations.append("r = 1.0 is at a member's ceiling")
    return Primary(comparison, max(digits), tuple(deviations))


def primary_markdown(primary: Primary) -> str:
    """The primary endpoint's section: the per-seed table, the pooled figure, the answer, the second line."""
    c, p, w = primary.comparison, primary.comparison.pooled, primary.comparison.welch
    k = len(c.seeds)
    lines = ["## Primary endpoint (pre-registered)", ""]
    if primary.deviations:
        lines += [
            f"**Not the pre-registered scale**: {'; '.join(primary.deviations)}. The figures below are "
            "computed as the protocol defines them, but they are not its answer.",
            "",
        ]
    lines += [
        f"Delta = certified accuracy at r = {PRIMARY_RADIUS:.1f} of {PRIMARY_A} minus {PRIMARY_B}, averaged "
        f"over sigma {' and '.join(f'{s:.1f}' for s in PRIMARY_SIGMAS)}; per training seed over the same "
        f"{primary.digits} digits and noise; {k} seeds.",
        "",
        "| seed | A (%) | B (%) | d_k (pp) | sqrt(v_k) (pp) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {seed} | {100 * a:.2f} | {100 * b:.2f} | {100 * d:+.2f} | {100 * math.sqrt(v):.2f} |"
        for seed, a, b, d, v in zip(
            c.seeds, c.accuracy_a, c.accuracy_b, c.differences, c.variances, strict=True
        )
    ]
    answer = (
        f"**{PRIMARY_A} certifies more at r = {PRIMARY_RADIUS:.1f}** (p < {LEVEL:g})"
        if p.p_value < LEVEL
        else f"**not shown at this power** (p >= {LEVEL:g})"
    )
    welch_line = (
        f"difference {100 * w.difference:+.2f} pp, t = {w.t:.3f} on {w.df:.1f} df, one-sided p = {w.p_value:.4g}"
        if w
        else f"not computable ({c.note})"
    )
    lines += [
        "",
        "A, B: the run's certified accuracy averaged over the two sigmas; d_k: the paired difference; v_k: "
        "the sample variance over the digits of the per-digit difference (the two sigmas averaged per "
        "digit), divided by the digits.",
        "",
        f"- Delta = {100 * p.estimate:+.2f} pp (DerSimonian-Laird random effects, Hartung-Knapp standard "
        f"error {100 * p.se:.2f} pp): one-sided p = {p.p_value:.4g} (H1: Delta > 0; t = "
        f"{p.estimate / p.se if p.se else math.nan:.3f} on {p.df:g} df); two-sided "
        f"{100 * p.confidence:g}% Hartung-Knapp interval [{100 * p.low:+.2f}, {100 * p.high:+.2f}] pp.",
        f"- Between-seed heterogeneity: tau^2 = {p.tau2:.3g} (tau = {100 * math.sqrt(p.tau2):.2f} pp), "
        f"Cochran's Q = {p.q:.2f} on {k - 1} df (p = {p.q_p_value:.3g}), I^2 = {100 * p.i2:.0f}%.",
        f"- Answer: {answer}.",
        f"- Second line (reported, not the decision): Welch's t-test, one-sided, of the {k} per-run values "
        f"of {PRIMARY_A} against those of {PRIMARY_B}: {welch_line}.",
        "",
        "Uncorrected, by design: the primary test stands alone at level 0.05 (PROTOCOL.md, Multiplicity); "
        "Welch's p is its reported second line, not a test of the decision; Q's p is a diagnostic of "
        "heterogeneity. None of them is in the secondary family below.",
        "",
    ]
    return "\n".join(lines)


def _pick(
    comparisons: Sequence[Comparison], sigmas: tuple[float, ...], radius: float | None
) -> list[Comparison]:
    """Those of ``sigmas``; of ``radius`` only (certified accuracy) unless radius is None (every radius
    and the ACR)."""
    return [
        c
        for c in comparisons
        if len(c.sigmas) == len(sigmas)
        and all(_same(a, b) for a, b in zip(c.sigmas, sigmas, strict=True))
        and (radius is None or (c.measure == ACCURACY and _same(c.radius, radius)))
    ]


def _compared(runs: Sequence[Run], a: str, b: str, radii: Sequence[float]) -> list[Comparison]:
    return compare_methods(runs, a, b, radii, PRIMARY_SIGMAS, 0.95, "two-sided")


def secondary_comparisons(
    runs: Sequence[Run], radii: Sequence[float]
) -> tuple[list[tuple[str, Comparison]], list[str]]:
    """(group, comparison) of S1-S5 in the order printed, and a line per planned comparison with no files."""
    found: list[tuple[str, Comparison]] = []
    missing: list[str] = []
    primary = _compared(runs, PRIMARY_A, PRIMARY_B, radii)
    for sigma in PRIMARY_SIGMAS:
        chosen = _pick(primary, (sigma,), None)
        found += [("S1", c) for c in chosen]
        if not chosen:
            missing.append(f"S1 {PRIMARY_A} vs {PRIMARY_B} at sigma {sigma:g}: no paired files")
    by_pair = {(a, b): _compared(runs, a, b, radii) for _, a, b in SECONDARY_PAIRS}
    for group, a, b in SECONDARY_PAIRS:
        chosen = _pick(by_pair[(a, b)], PRIMARY_SIGMAS, PRIMARY_RADIUS)
        found += [(group, c) for c in chosen]
        if not chosen:
            missing.append(f"{group} {a} vs {b}: not certified at both sigma 0.5 and 1.0 on paired files")
    for (a, b), comparisons in [((PRIMARY_A, PRIMARY_B), primary), *by_pair.items()]:
        chosen = _pick(comparisons, (SECONDARY_SIGMA,), None)
        found += [("S5", c) for c in chosen]
        if not chosen:
            missing.append(f"S5 {a} vs {b} at sigma {SECONDARY_SIGMA:g}: no paired files")
    return found, missing


def secondary_markdown(found: Sequence[tuple[str, Comparison]], missing: Sequence[str]) -> str:
    """The secondary section: per group a table of certified accuracy and one of ACR, every p-value
    Holm-corrected over the one family of all secondary tests (pooled and Welch)."""
    holm_pooled, holm_welch, family = holm_family([c for _, c in found])
    lines = [
        "## Secondary analyses (exploratory, each labelled)",
        "",
        f"Every p-value in this section is two-sided, and Holm-corrected over one family of {family} tests: "
        "every pooled (DerSimonian-Laird + Hartung-Knapp) and every Welch test of S1-S5 together "
        "(PROTOCOL.md, Multiplicity). Q's p (heterogeneity) is a diagnostic, uncorrected and outside the "
        "family. Same pooling as the primary; ^: the radius where a member's certificates are capped.",
        "",
    ]
    for group, title in GROUPS.items():
        members = [i for i, (g, _) in enumerate(found) if g == group]
        lines.append(f"### {group}: {title}")
        lines.append("")
        for measure in (ACCURACY, ACR):
            chosen = [i for i in members if found[i][1].measure == measure]
            if chosen:
                table = comparison_table(
                    [found[i][1] for i in chosen],
                    [holm_pooled[i] for i in chosen],
                    [holm_welch[i] for i in chosen],
                )
                lines.append(
                    f"{'Certified accuracy (%, differences in pp)' if measure == ACCURACY else 'ACR'}:"
                )
                lines.append("")
                lines.append(to_markdown(table))
        if not members:
            lines += ["No files for this analysis.", ""]
    lines += ["### Not made", ""]
    lines += [f"- {line}" for line in missing]
    lines += [f"- {group}: {why}" for group, why in NOT_MADE.items()]
    return "\n".join(lines) + "\n"


def analysis_markdown(root: Path, radii: Sequence[float] = PROTOCOL_RADII) -> str:
    """The whole analysis of the result files under ``root`` (RESULTS/certify of the v2 script)."""
    runs, bad = load_runs([root])
    unreadable = [b for b in bad if b.unreadable]
    if unreadable:
        raise ProtocolError(f"{unreadable[0].path}: {unreadable[0].reason}")
    if not runs:
        raise ProtocolError(f"no certification files under {root}")
    primary = primary_endpoint(runs)
    found, missing = secondary_comparisons(runs, radii)
    header = (
        "# mnist5k v2: the pre-registered analysis\n\n"
        "Computed by ddsx.report.mnist5k_v2 as experiments/results/mnist5k_v2/PROTOCOL.md defines it, from "
        f"the result files under {root} ({len(runs)} files). The primary endpoint first, then the "
        "secondary analyses, each labelled.\n\n"
    )
    return header + primary_markdown(primary) + "\n" + secondary_markdown(found, missing)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ddsx.report.mnist5k_v2", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("root", type=Path, help="the v2 script's RESULTS/certify folder")
    parser.add_argument("--radii", nargs="+", type=float, default=list(PROTOCOL_RADII), help="the grid radii")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown to this file")
    return parser.parse_args(argv)


@console_script
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    markdown = analysis_markdown(args.root, args.radii)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
