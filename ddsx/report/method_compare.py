"""Two methods compared over training seeds, the training run as the unit (``ddsx-report --compare-methods``).

For each seed k that both methods were trained with, the two methods' files of that seed (one sigma, or
several averaged) hold the same digits; rows are paired by digit index. At radius r, digit i gives
e_i = a_i - b_i (a_i = 1 when method A certifies digit i correctly at radius >= r), averaged over the
sigmas of the comparison. The seed's paired difference is d_k = mean(e_i), its within-seed variance
v_k = sample variance of e_i / (digits) (for one sigma the paired-binomial variance of a mean of values in
{-1, 0, 1}). The d_k are pooled by DerSimonian-Laird with the Hartung-Knapp correction
(ddsx.report.run_level), with the between-seed heterogeneity; Welch's test of the per-run certified
accuracies is the second line. ACR is compared the same way after the radii, with e_i the difference of
the two digits' certified radii (0 where wrong): grid ACR for sequential runs, exact ACR for fixed-n ones.
Holm's correction runs over every p-value the comparison tables print (accuracies and ACR together).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ddsx.certification.metrics import acr_term, certified_at
from ddsx.certification.result_file import ResultRow
from ddsx.errors import DDSXError
from ddsx.report.paired import paired_rows
from ddsx.report.run_level import Pooled, Welch, holm, mean_interval, random_effects, welch
from ddsx.report.runs import Run
from ddsx.report.tables import Table

# What two runs must share to be certified on the same digits with the same noise (method, classifier
# and denoiser are what is compared); the noise of a digit is seeded per device type.
PAIR_FIELDS = (
    "dataset",
    "split",
    "n0",
    "n",
    "alpha",
    "mode",
    "examples_planned",
    "certify_seed",
    "device_type",
)

# A digit's score: 1.0 / 0.0 for "certified correctly at radius >= r", or its certified radius (ACR).
Score = Callable[[ResultRow], float]

ACCURACY = "certified accuracy"
ACR = "ACR"


class AmbiguousRunsError(DDSXError):
    """Two runs of one method, seed and sigma in one comparison: which one to pair is not known."""


@dataclass(frozen=True)
class Comparison:
    """Method A against method B at one radius, over the seeds both were trained with."""

    method_a: str
    method_b: str
    sigmas: tuple[float, ...]  # one sigma, or the sigmas averaged per digit
    radius: float | None  # None for an ACR comparison
    seeds: tuple[int, ...]
    accuracy_a: tuple[float, ...]  # per seed, certified accuracy (mean over the sigmas)
    accuracy_b: tuple[float, ...]
    differences: tuple[float, ...]  # d_k
    variances: tuple[float, ...]  # v_k
    at_ceiling: bool  # r is the largest radius some member's test can certify (Run.ceiling_radius)
    pooled: Pooled | None  # None: not computable, see note
    welch: Welch | None
    note: str = ""
    measure: str = ACCURACY  # ACCURACY at ``radius``, or ACR (accuracies then read as mean ACRs)
    acr_kind: str = ""  # for ACR: "grid" (sequential members), "exact" (fixed n), or "exact and grid"

    @property
    def label(self) -> str:
        """What is compared: "r=1" or "ACR (grid)"."""
        return f"{ACR} ({self.acr_kind})" if self.measure == ACR else f"r={self.radius:g}"


def accuracy_score(radius: float) -> Score:
    """The score of certified accuracy at ``radius``: 1 for a digit certified correctly that far, else 0."""
    return lambda row: float(certified_at(row, radius))


def acr_score(row: ResultRow) -> float:
    """The score of ACR: the digit's certified radius when correct, else 0 (ddsx.certification.metrics)."""
    return acr_term(row)


def seed_difference(
    pairs_by_sigma: Sequence[Sequence[tuple[ResultRow, ResultRow]]], score: float | Score
) -> tuple[float, float]:
    """(d_k, v_k) of one seed: the mean over digits of e_i (A's score minus B's, averaged over the
    sigmas given) and the sample variance of e_i over the digits divided by their number.

    ``score``: a radius (certified accuracy there) or a Score (e.g. acr_score). Every sigma's pairs must
    hold the same digits (paired_rows has matched A and B within each sigma); the variance is taken of
    the per-digit average, so the correlation of the sigmas through the shared digits is in it."""
    if not pairs_by_sigma:
        raise ValueError("no sigma to compare at")
    scored = accuracy_score(score) if isinstance(score, int | float) else score
    indices = [tuple(a.idx for a, _ in pairs) for pairs in pairs_by_sigma]
    if len(set(indices)) != 1:
        raise DDSXError(
            "the files of one seed hold different digits at different sigmas; cannot average them"
        )
    per_sigma = [np.array([scored(a) - scored(b) for a, b in pairs], dtype=float) for pairs in pairs_by_sigma]
    digit = np.mean(per_sigma, axis=0)
    if len(digit) < 2:
        raise DDSXError("a within-seed variance needs at least 2 digits")
    return float(digit.mean()), float(digit.var(ddof=1) / len(digit))


def _key(run: Run) -> tuple:
    return tuple(getattr(run, name) for name in PAIR_FIELDS)


def matched_seeds(
    runs: Sequence[Run], method_a: str, method_b: str
) -> dict[tuple, dict[float, dict[int, tuple[Run, Run]]]]:
    """experiment key -> sigma -> seed -> (run of A, run of B), for usable runs with a training seed.

    Two runs of one method at one seed, sigma and key are refused (AmbiguousRunsError): give the
    folders of one experiment."""
    found: dict[tuple, dict[float, dict[int, dict[str, Run]]]] = {}
    for run in runs:
        if run.method not in (method_a, method_b) or not run.averageable:
            continue
        if run.train_seed is None or run.sigma is None:
            continue
        slot = found.setdefault(_key(run), {}).setdefault(run.sigma, {}).setdefault(run.train_seed, {})
        if run.method in slot:
            raise AmbiguousRunsError(
                f"two runs of {run.method} with training seed {run.train_seed} at sigma {run.sigma:g}: "
                f"{slot[run.method].path} and {run.path}; give the folders of one experiment"
            )
        slot[run.method] = run
    return {
        key: {
            sigma: {
                seed: (pair[method_a], pair[method_b])
                for seed, pair in sorted(seeds.items())
                if len(pair) == 2
            }
            for sigma, seeds in sorted(sigmas.items())
        }
        for key, sigmas in found.items()
    }


def compare_methods(
    runs: Sequence[Run],
    method_a: str,
    method_b: str,
    radii: Sequence[float],
    average_sigmas: Sequence[float] = (),
    confidence: float = 0.95,
    alternative: str = "two-sided",
) -> list[Comparison]:
    """A against B at each sigma and radius, and (``average_sigmas``) averaged over those sigmas per digit;
    after the radii of each sigma set, one comparison of ACR.

    Radii beyond the largest certifiable radius of a member are left out (no method could certify them)."""
    comparisons = []
    for sigmas_of_key in matched_seeds(runs, method_a, method_b).values():
        sets = [(sigma,) for sigma in sigmas_of_key]
        wanted = tuple(sorted(float(s) for s in average_sigmas))
        if wanted and all(_has_sigma(sigmas_of_key, s) for s in wanted):
            sets.append(wanted)
        for sigmas in sets:
            by_sigma = [sigmas_of_key[_sigma_of(sigmas_of_key, s)] for s in sigmas]
            seeds = sorted(set.intersection(*(set(seeds) for seeds in by_sigma)))
            if not seeds:
                continue
            members = [run for seeds_of in by_sigma for seed in seeds for run in seeds_of[seed]]
            pairs = {
                seed: [paired_rows(s[seed][0].rows, s[seed][1].rows, (method_a, method_b)) for s in by_sigma]
                for seed in seeds
            }
            for radius in radii:
                if any(run.max_radius is not None and radius > run.max_radius for run in members):
                    continue
                comparisons.append(
                    _compare_at(
                        method_a, method_b, sigmas, radius, pairs, members, by_sigma, confidence, alternative
                    )
                )
            comparisons.append(
                _compare_at(
                    method_a, method_b, sigmas, None, pairs, members, by_sigma, confidence, alternative
                )
            )
    return comparisons


def _has_sigma(sigmas: dict[float, object], sigma: float) -> bool:
    return any(abs(s - sigma) < 1e-9 for s in sigmas)


def _sigma_of(sigmas: dict[float, object], sigma: float) -> float:
    return next(s for s in sigmas if abs(s - sigma) < 1e-9)


def _compare_at(
    method_a: str,
    method_b: str,
    sigmas: tuple[float, ...],
    radius: float | None,
    pairs: dict[int, list[list[tuple[ResultRow, ResultRow]]]],
    members: Sequence[Run],
    by_sigma: Sequence[dict[int, tuple[Run, Run]]],
    confidence: float,
    alternative: str,
) -> Comparison:
    """One comparison: certified accuracy at ``radius``, or ACR where ``radius`` is None."""
    seeds = tuple(pairs)
    score = acr_score if radius is None else accuracy_score(radius)
    differences, variances = zip(*(seed_difference(pairs[seed], score) for seed in seeds), strict=True)
    accuracy_a = tuple(_mean_score([s[seed][0] for s in by_sigma], score) for seed in seeds)
    accuracy_b = tuple(_mean_score([s[seed][1] for s in by_sigma], score) for seed in seeds)
    notes, pooled, second = [], None, None
    if len(seeds) < 2:
        notes.append("one seed: no run-level test")
    elif any(v == 0 for v in variances):
        # A seed whose digits all agree would take all the fixed-effect weight: DL is undefined.
        zero = [seed for seed, v in zip(seeds, variances, strict=True) if v == 0]
        notes.append(f"seed {','.join(map(str, zero))}: no digit told the methods apart (within variance 0)")
    else:
        pooled = random_effects(differences, variances, confidence, alternative)
    if len(seeds) >= 2:
        try:
            second = welch(accuracy_a, accuracy_b, confidence, alternative)
        except ValueError:
            notes.append("Welch: no spread over seeds")
    at_ceiling = radius is not None and any(run.at_ceiling(radius) for run in members)
    kinds = sorted({"grid" if run.grid else "exact" for run in members})
    return Comparison(
        method_a,
        method_b,
        sigmas,
        None if radius is None else float(radius),
        seeds,
        accuracy_a,
        accuracy_b,
        tuple(differences),
        tuple(variances),
        at_ceiling,
        pooled,
        second,
        "; ".join(notes),
        measure=ACCURACY if radius is not None else ACR,
        acr_kind="" if radius is not None else " and ".join(kinds),
    )


def _mean_score(runs: Sequence[Run], score: Score) -> float:
    """The run's certified accuracy (or ACR) for ``score``, averaged over the runs (one per sigma)."""
    return float(np.mean([np.mean([score(row) for row in run.rows]) for run in runs]))


def holm_family(comparisons: Sequence[Comparison]) -> tuple[list[float | None], list[float | None], int]:
    """Holm-adjusted p-values of the pooled tests and of the Welch tests (None where not computed), and
    the family size: every p-value the comparison tables print, both kinds together."""
    raw = [c.pooled.p_value for c in comparisons if c.pooled] + [
        c.welch.p_value for c in comparisons if c.welch
    ]
    adjusted = iter(holm(raw))
    pooled = [next(adjusted) if c.pooled else None for c in comparisons]
    second = [next(adjusted) if c.welch else None for c in comparisons]
    return pooled, second, len(raw)


def comparison_table(
    comparisons: Sequence[Comparison],
    holm_pooled: Sequence[float | None] | None = None,
    holm_welch: Sequence[float | None] | None = None,
) -> Table:
    """The table of comparisons of one measure: certified accuracies in % and differences in percentage
    points, or ACRs and their differences in l2 radius. The Holm columns hold the adjusted p-values given
    (computed over the caller's family); without them the table has none."""
    measures = {c.measure for c in comparisons}
    if len(measures) != 1:
        raise ValueError(f"one table holds one measure, got {sorted(measures)}")
    acr = measures == {ACR}
    with_holm = holm_pooled is not None and holm_welch is not None
    header = ["A vs B", "sigma", "ACR" if acr else "r", "seeds", "A mean ± sd", "B mean ± sd"]
    header += ["A - B pooled [CI]", "p (HK)"] + (["Holm p (HK)"] if with_holm else [])
    header += ["tau", "Q (p)", "I²", "Welch A - B [CI]", "p (Welch)"] + (
        ["Holm p (Welch)"] if with_holm else []
    )
    # ACR in radius units; certified accuracy in % (means) and percentage points (differences).
    scale, digits, mean_digits = (1.0, 3, 3) if acr else (100.0, 2, 1)
    hp_all = holm_pooled if with_holm else [None] * len(comparisons)
    hw_all = holm_welch if with_holm else [None] * len(comparisons)
    rows = []
    for c, hp, hw in zip(comparisons, hp_all, hw_all, strict=True):
        p, w = c.pooled, c.welch
        what = c.acr_kind if acr else f"{c.radius:g}" + (" ^" if c.at_ceiling else "")
        row = [
            f"{c.method_a} vs {c.method_b}",
            "+".join(f"{s:g}" for s in c.sigmas),
            what,
            str(len(c.seeds)),
            _spread(c.accuracy_a, scale, mean_digits),
            _spread(c.accuracy_b, scale, mean_digits),
            _interval(p.estimate, p.low, p.high, scale, digits) if p else c.note or "-",
            f"{p.p_value:.3g}" if p else "-",
        ]
        row += [_p(hp)] if with_holm else []
        row += [
            f"{scale * p.tau2**0.5:.{digits}f}" if p else "-",
            f"{p.q:.1f} ({p.q_p_value:.2g})" if p else "-",
            f"{100 * p.i2:.0f}%" if p else "-",
            _interval(w.difference, w.low, w.high, scale, digits) if w else "-",
            f"{w.p_value:.3g}" if w else "-",
        ]
        row += [_p(hw)] if with_holm else []
        rows.append(row)
    return header, rows


def comparison_tables(comparisons: Sequence[Comparison]) -> tuple[list[tuple[str, Table]], int]:
    """(title, table) for certified accuracy, then for ACR, with Holm's correction over every p-value of
    both (pooled and Welch together); and the family size."""
    holm_pooled, holm_welch, family = holm_family(comparisons)
    tables = []
    for measure, title in ((ACCURACY, "Certified accuracy"), (ACR, "ACR")):
        chosen = [i for i, c in enumerate(comparisons) if c.measure == measure]
        if chosen:
            table = comparison_table(
                [comparisons[i] for i in chosen],
                [holm_pooled[i] for i in chosen],
                [holm_welch[i] for i in chosen],
            )
            tables.append((title, table))
    return tables, family


def _p(value: float | None) -> str:
    return f"{value:.3g}" if value is not None else "-"


def _interval(estimate: float, low: float, high: float, scale: float, digits: int) -> str:
    return f"{scale * estimate:+.{digits}f} [{scale * low:+.{digits}f}, {scale * high:+.{digits}f}]"


def _spread(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    if len(values) < 2:
        return f"{scale * values[0]:.{digits}f}"
    mean, sd, _, _ = mean_interval(values)
    return f"{scale * mean:.{digits}f} ± {scale * sd:.{digits}f}"


def sides(alternative: str) -> str:
    """The alternative of the p-values in words."""
    return {
        "two-sided": "two-sided",
        "greater": "one-sided, H1: A certifies more than B",
        "less": "one-sided, H1: A certifies less than B",
    }.get(alternative, alternative)


def comparison_notes(comparisons: Sequence[Comparison], family: int) -> str:
    """The paragraph under the tables: what each column is, the family and the alternative."""
    first = comparisons[0]
    level = f"{100 * first.pooled.confidence:g}%" if first.pooled else "95%"
    alternative = (
        first.pooled.alternative if first.pooled else first.welch.alternative if first.welch else "?"
    )
    return (
        f"Training run as the unit. A - B pooled: per seed, the paired difference of certified accuracy "
        f"(percentage points) over the same digits (rows paired by index; with several sigmas, averaged per "
        f"digit), its within-seed variance the sample variance of the per-digit differences over the "
        f"digits; pooled over seeds by DerSimonian-Laird random effects with the Hartung-Knapp standard "
        f"error and t on seeds - 1 degrees of freedom ({level} interval). tau: the between-seed sd of the "
        f"difference (pp); Q: Cochran's heterogeneity statistic (p of no heterogeneity: a diagnostic, not "
        f"in the family, uncorrected); I²: the share of the spread that is between seeds. Welch: t-test of "
        f"the per-run certified accuracies (unpaired), the second line. The ACR table pools the per-digit "
        f"differences of certified radius (0 where wrong) the same way, in l2 radius units; grid: the mean "
        f"largest grid radius certified (sequential), a floor of the exact ACR. p-values are "
        f"{sides(alternative)}. Holm p: Holm's step-down correction over all {family} tests in these tables "
        f"(pooled and Welch, certified accuracy and ACR together). "
        f"^: the largest radius the test of a member can certify (its grid's largest radius within "
        f"sigma * PhiInv(alpha^(1/n)) for sequential runs): digits certified there may reach further, so "
        f"a difference there is capped. Radii beyond that limit are left out."
    )
