"""The tables of issue 20's head-to-head: each diffusion-smoothing variant with each training method.

Reads ROOT/sigma<s>/<variant>/certify.<method>_seed<k>.tsv (one multi-classifier run per sigma and
variant, all on the same digits and noise seed) through the report's validated reader, each run's
wall_seconds.txt (written by experiments/variants_head_to_head.sh) and each file's settings sidecar,
and prints three markdown tables:

1. certified accuracy (%) at each radius per sigma, variant and method, the mean over the training
   seeds present; "cap" marks a radius past the largest one the budget and alpha can certify (no
   certificate reaches it), "^" the run's ceiling radius (capped certificates pile up there);
2. the cost per certificate: noisy copies per digit (a multi-classifier run shares its copies, so a
   digit costs the most copies any of its classifiers used), the denoiser (UNet) and classifier calls
   a copy costs (the sidecar's description of the denoiser; 1 each for one-shot denoisers), their
   product per digit, and the run's wall seconds per digit on the machine that ran it;
3. run-level comparisons of dds_adv with each other method per sigma and variant, the training run
   as the unit (ddsx.report.method_compare: the per-seed paired differences d_k of certified accuracy
   at each radius, and of ACR, pooled over seeds by DerSimonian-Laird with Hartung-Knapp's t);
4. paired comparisons per training seed, conditional on its two networks: McNemar's exact test per
   radius, printed where a digit is discordant.
Holm's correction runs over one family: every p-value tables 3 and 4 print (the size is printed).

    python experiments/variants_summary.py experiments/results/variants/certify --radii 0 0.5 1.0
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ddsx.certification import sidecar_path
from ddsx.certification.metrics import certified_at
from ddsx.cli.errors import console_script
from ddsx.errors import DDSXError
from ddsx.report.method_compare import Comparison as RunLevelComparison
from ddsx.report.method_compare import compare_methods
from ddsx.report.paired import McNemarResult, mcnemar_per_radius, paired_rows
from ddsx.report.run_level import holm
from ddsx.report.runs import Run, load_run

# The variants in the order the tables list them (others follow, sorted), and the method every
# comparison is against.
VARIANT_ORDER = ("dds", "local_smoothing", "consistency", "densepure")
REFERENCE = "dds_adv"
LEVEL = 0.05


class SummaryInputError(DDSXError):
    """A results folder the summary cannot read as a head-to-head."""


@dataclass
class VariantRun:
    """One multi-classifier run: one sigma, one variant, its result files by (method, seed)."""

    sigma: float
    variant: str
    runs: dict[tuple[str, int], Run]
    wall_seconds: float | None
    unet_calls_per_copy: int
    classifier_calls_per_copy: int


def _calls(denoiser: dict, key: str, where: Path) -> int:
    """A per-copy call count from a sidecar's denoiser description: a positive integer, 1 if absent."""
    value = denoiser.get(key, 1)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SummaryInputError(f"{where}: denoiser.{key} must be a positive integer, got {value!r}")
    return value


def _wall_seconds(folder: Path) -> float | None:
    path = folder / "wall_seconds.txt"
    if not path.is_file():
        return None
    text = path.read_text().strip()
    if not re.fullmatch(r"\d+(\.\d+)?", text):
        raise SummaryInputError(f"{path}: expected a number of seconds, got {text[:40]!r}")
    return float(text)


def load_variant(folder: Path, sigma: float) -> VariantRun:
    """Every result file of one run folder, validated: whole runs at ``sigma`` with known settings, one
    file per (method, training seed), one denoiser description, the same digits in every file."""
    files = sorted(folder.glob("certify.*.tsv"))
    if not files:
        raise SummaryInputError(f"{folder}: no certify.*.tsv result files")
    runs: dict[tuple[str, int], Run] = {}
    calls: set[tuple[int, int]] = set()
    for path in files:
        run = load_run(path)
        problem = run.problem or run.caveat
        if problem:
            raise SummaryInputError(f"{path}: {problem}; the summary needs whole runs with their settings")
        if run.sigma is None or not math.isclose(run.sigma, sigma):
            raise SummaryInputError(f"{path}: certified at sigma {run.sigma}, its folder says {sigma:g}")
        if run.train_seed is None:
            raise SummaryInputError(f"{path}: its settings name no training seed")
        key = (run.method, run.train_seed)
        if key in runs:
            raise SummaryInputError(
                f"{path}: a second file of {run.method} seed {run.train_seed} in {folder}"
            )
        runs[key] = run
        denoiser = json.loads(sidecar_path(path).read_text()).get("denoiser") or {}
        if not isinstance(denoiser, dict):
            raise SummaryInputError(f"{sidecar_path(path)}: its denoiser entry is not an object")
        calls.add(
            (
                _calls(denoiser, "unet_calls_per_copy", path),
                _calls(denoiser, "classifier_calls_per_copy", path),
            )
        )
    if len(calls) != 1:
        raise SummaryInputError(f"{folder}: its files describe different denoisers ({sorted(calls)})")
    first = next(iter(runs.values()))
    for run in runs.values():
        paired_rows(
            first.rows, run.rows, (first.path.name, run.path.name)
        )  # same digits and labels, or refused
    ((unet, classifier),) = calls
    return VariantRun(sigma, folder.name, runs, _wall_seconds(folder), unet, classifier)


def load_root(root: Path) -> list[VariantRun]:
    """ROOT/sigma<s>/<variant>/ for every sigma and variant, ordered by sigma then VARIANT_ORDER."""
    found = []
    for sigma_folder in sorted(root.glob("sigma*")):
        match = re.fullmatch(r"sigma(\d+(?:\.\d+)?)", sigma_folder.name)
        if not match or not sigma_folder.is_dir():
            continue
        for folder in sorted(p for p in sigma_folder.iterdir() if p.is_dir()):
            found.append(load_variant(folder, float(match.group(1))))
    if not found:
        raise SummaryInputError(f"{root}: no sigma<s>/<variant>/ folders with result files")
    rank = {name: i for i, name in enumerate(VARIANT_ORDER)}
    found.sort(key=lambda v: (v.sigma, rank.get(v.variant, len(rank)), v.variant))
    # Across variants of a sigma too: the same digits, or the headline would compare different digits.
    for v in found:
        same_sigma = next(w for w in found if w.sigma == v.sigma)
        a, b = next(iter(same_sigma.runs.values())), next(iter(v.runs.values()))
        paired_rows(a.rows, b.rows, (str(a.path), str(b.path)))
    return found


def methods_of(variant: VariantRun) -> list[str]:
    """The methods of a run, REFERENCE first, the others sorted."""
    names = sorted({method for method, _ in variant.runs})
    return sorted(names, key=lambda name: (name != REFERENCE, name))


def accuracy_cell(variant: VariantRun, method: str, radius: float) -> str:
    runs = [run for (m, _), run in sorted(variant.runs.items()) if m == method]
    ceiling = runs[0].max_radius
    if ceiling is not None and radius > ceiling + 1e-9:
        return "cap"
    values = [100 * statistics.fmean(certified_at(row, radius) for row in run.rows) for run in runs]
    mark = "^" if runs[0].at_ceiling(radius) else ""
    return f"{statistics.fmean(values):.1f}{mark}"


def accuracy_table(variants: Sequence[VariantRun], radii: Sequence[float]) -> list[str]:
    lines = [
        "| sigma | variant | method | seeds | digits | " + " | ".join(f"r={r:g}" for r in radii) + " |",
        "|---|---|---|---|---|" + "---|" * len(radii),
    ]
    for v in variants:
        for method in methods_of(v):
            seeds = sorted(seed for m, seed in v.runs if m == method)
            digits = len(v.runs[(method, seeds[0])].rows)
            cells = " | ".join(accuracy_cell(v, method, r) for r in radii)
            lines.append(f"| {v.sigma:g} | {v.variant} | {method} | {len(seeds)} | {digits} | {cells} |")
    return lines


def copies_per_digit(variant: VariantRun) -> float:
    """Mean over digits of the most copies any classifier of the run used on the digit (the run draws
    them once for all): samples, plus n0 where the run selected with n0 copies first."""
    most: dict[int, int] = {}
    for run in variant.runs.values():
        for row in run.rows:
            used = (row.samples if row.samples is not None else row.n or 0) + (row.n0 or 0)
            most[row.idx] = max(most.get(row.idx, 0), used)
    return statistics.fmean(most.values())


def cost_table(variants: Sequence[VariantRun]) -> list[str]:
    lines = [
        "| sigma | variant | classifiers | copies / digit | UNet calls / copy | classifier calls / copy | "
        "UNet calls / digit | wall s / digit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        copies = copies_per_digit(v)
        digits = len(next(iter(v.runs.values())).rows)
        wall = "-" if v.wall_seconds is None else f"{v.wall_seconds / digits:.2f}"
        lines.append(
            f"| {v.sigma:g} | {v.variant} | {len(v.runs)} | {copies:.0f} | {v.unet_calls_per_copy} | "
            f"{v.classifier_calls_per_copy} | {copies * v.unet_calls_per_copy:.0f} | {wall} |"
        )
    return lines


@dataclass
class Comparison:
    sigma: float
    variant: str
    seed: int
    other: str
    tests: list[McNemarResult]


def comparisons(variants: Sequence[VariantRun], radii: Sequence[float]) -> list[Comparison]:
    """dds_adv against every other method of the run, seed by seed (the seeds both methods have)."""
    found = []
    for v in variants:
        for other in methods_of(v)[1:]:
            for (method, seed), run in sorted(v.runs.items()):
                if method != other or (REFERENCE, seed) not in v.runs:
                    continue
                pairs = paired_rows(v.runs[(REFERENCE, seed)].rows, run.rows)
                found.append(Comparison(v.sigma, v.variant, seed, other, mcnemar_per_radius(pairs, radii)))
    return found


def run_level(variants: Sequence[VariantRun], radii: Sequence[float]) -> list[tuple[str, RunLevelComparison]]:
    """(variant, comparison) of dds_adv against every other method of each run over the training seeds
    both have: certified accuracy at each radius the runs can certify, then ACR."""
    found = []
    for v in variants:
        for other in methods_of(v)[1:]:
            for comparison in compare_methods(list(v.runs.values()), REFERENCE, other, radii):
                found.append((v.variant, comparison))
    return found


def _tested(found: Sequence[Comparison]) -> list[McNemarResult]:
    return [t for c in found for t in c.tests if t.a_only + t.b_only > 0]


def holm_family(
    pooled: Sequence[tuple[str, RunLevelComparison]], per_seed: Sequence[Comparison]
) -> tuple[list[float | None], list[float], int]:
    """Holm over every printed p-value: the run-level tests (None where a comparison has no test) and the
    per-seed McNemar tests with a discordant digit; and the family size."""
    raw = [c.pooled.p_value for _, c in pooled if c.pooled] + [t.p_value for t in _tested(per_seed)]
    adjusted = iter(holm(raw))
    run_level_adjusted = [next(adjusted) if c.pooled else None for _, c in pooled]
    return run_level_adjusted, list(adjusted), len(raw)


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def run_level_table(
    found: Sequence[tuple[str, RunLevelComparison]], adjusted: Sequence[float | None]
) -> list[str]:
    lines = [
        f"| sigma | variant | {REFERENCE} vs | measure | seeds | d per seed | pooled d [95% CI] | p (HK) | Holm p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (variant, c), corrected in zip(found, adjusted, strict=True):
        acr = c.measure != "certified accuracy"
        show = (lambda x: f"{x:+.3f}") if acr else _points
        per_seed = ", ".join(show(d) for d in c.differences)
        if c.pooled is None:
            pooled, p, holm_p = f"- ({c.note})", "-", "-"
        else:
            pooled = f"{show(c.pooled.estimate)} [{show(c.pooled.low)}, {show(c.pooled.high)}]"
            p = f"{c.pooled.p_value:.3g}"
            holm_p = f"{corrected:.3g}" + ("*" if corrected < LEVEL else "")
        sigmas = ",".join(f"{s:g}" for s in c.sigmas)
        lines.append(
            f"| {sigmas} | {variant} | {c.method_b} | {c.label} | {len(c.seeds)} | {per_seed} | {pooled} | "
            f"{p} | {holm_p} |"
        )
    lines.append("")
    lines.append(
        f"d: {REFERENCE}'s certified accuracy minus the other method's on the same digits, in percentage "
        "points (ACR: in l2 radius), one value per training seed; pooled by DerSimonian-Laird with "
        "Hartung-Knapp's t on seeds - 1 degrees of freedom (needs two seeds, and digits that tell the "
        "methods apart in every seed). The training run is the unit: this is the test of the claim."
    )
    return lines


def comparison_table(found: Sequence[Comparison], adjusted: Sequence[float], family: int) -> list[str]:
    tested = _tested(found)
    adjusted = iter(adjusted)
    lines = [
        f"| sigma | variant | seed | {REFERENCE} vs | radius | acc {REFERENCE} (%) | acc other (%) | "
        f"only {REFERENCE} | only other | McNemar p | Holm p |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in found:
        for t in c.tests:
            if t.a_only + t.b_only == 0:
                continue
            corrected = next(adjusted)
            star = "*" if corrected < LEVEL else ""
            lines.append(
                f"| {c.sigma:g} | {c.variant} | {c.seed} | {c.other} | {t.radius:g} | {100 * t.accuracy_a:.1f} | "
                f"{100 * t.accuracy_b:.1f} | {t.a_only} | {t.b_only} | {t.p_value:.3g} | {corrected:.3g}{star} |"
            )
    lines.append("")
    lines.append(
        f"McNemar's exact two-sided test of the digits certified correctly at the radius by one run only "
        f"({len(tested)} tests: every (sigma, variant, seed, method, radius) with a discordant digit); "
        f"Holm's step-down correction over one family of {family} tests, these and the run-level tests "
        f"above; *: Holm p < {LEVEL:g}. Radii without a discordant digit have no test and are not listed. "
        f"Each test is conditional on the two trained networks of its seed."
    )
    return lines


def summary(variants: Sequence[VariantRun], radii: Sequence[float]) -> str:
    lines = ["## Certified accuracy (%) at each radius", ""]
    lines += accuracy_table(variants, radii)
    lines += [
        "",
        "Mean over the training seeds listed. cap: past the largest radius the budget and alpha can "
        "certify; ^: the ceiling radius, where capped certificates pile up.",
        "",
        "## Cost per certificate",
        "",
    ]
    lines += cost_table(variants)
    lines += [
        "",
        "Copies / digit: the most any classifier of the run used (they share the copies). Wall seconds: "
        "the whole ddsx-certify run (model loading included) over its digits, on the machine that ran it.",
        "",
        f"## {REFERENCE} against the other methods over training seeds (run level)",
        "",
    ]
    pooled, per_seed = run_level(variants, radii), comparisons(variants, radii)
    run_level_adjusted, per_seed_adjusted, family = holm_family(pooled, per_seed)
    lines += run_level_table(pooled, run_level_adjusted)
    lines += ["", f"## {REFERENCE} against the other methods, per variant and seed", ""]
    lines += comparison_table(per_seed, per_seed_adjusted, family)
    return "\n".join(lines) + "\n"


@console_script  # an unreadable or inconsistent results folder: one line, exit 2
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder with sigma<s>/<variant>/certify.<method>_seed<k>.tsv")
    parser.add_argument("--radii", nargs="+", type=float, required=True)
    args = parser.parse_args(argv)
    sys.stdout.write(summary(load_root(args.root), args.radii))
    return 0


if __name__ == "__main__":
    sys.exit(main())
