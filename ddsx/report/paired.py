"""Paired comparisons of two certification runs on the same examples (docs/method.md section 4 quantities).

Two methods certified on the same digits with the same noise seed differ example by example; the
paired tests use that, where two independent accuracies would drown the difference in digit-to-digit
variation.

- McNemar's exact test per radius r: of the examples certified correctly at r by exactly one of the two
  runs, ``a_only`` by A and ``b_only`` by B; under "no difference" each such example is A's with
  probability 1/2, so the two-sided p-value is the exact binomial test of a_only out of a_only + b_only.
- A paired bootstrap interval for ACR(A) - ACR(B): resample the examples (with replacement, the same
  examples for both runs) and take the percentile interval of the resampled differences.
- Holm's step-down correction over the McNemar tests of the table (ddsx.report.run_level.holm): the
  family is every radius with a discordant example; a radius without one has no test (p = 1 by
  definition) and stays outside, so it cannot dilute the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from ddsx.certification.metrics import acr_term, certified_at
from ddsx.certification.result_file import ResultRow
from ddsx.errors import DDSXError
from ddsx.report.run_level import holm


class UnpairedRunsError(DDSXError):
    """Two result files that do not hold the same examples (or disagree on their labels)."""


@dataclass(frozen=True)
class McNemarResult:
    """One radius: certified accuracy of A and B, the discordant counts and the exact two-sided p-value."""

    radius: float
    examples: int
    accuracy_a: float
    accuracy_b: float
    a_only: int
    b_only: int
    p_value: float


@dataclass(frozen=True)
class BootstrapInterval:
    """ACR(A) - ACR(B) on the examples, and its paired percentile bootstrap interval."""

    difference: float
    low: float
    high: float
    confidence: float
    resamples: int
    seed: int


def paired_rows(
    a: Sequence[ResultRow], b: Sequence[ResultRow], names: tuple[str, str] = ("A", "B")
) -> list[tuple[ResultRow, ResultRow]]:
    """The rows of A and B matched by example index; refused unless both hold the same examples."""
    by_a, by_b = {r.idx: r for r in a}, {r.idx: r for r in b}
    if len(by_a) != len(a) or len(by_b) != len(b):
        raise UnpairedRunsError(f"{names[0] if len(by_a) != len(a) else names[1]} lists an example twice")
    only_a, only_b = sorted(set(by_a) - set(by_b)), sorted(set(by_b) - set(by_a))
    if only_a or only_b:
        raise UnpairedRunsError(
            f"{names[0]} and {names[1]} do not hold the same examples: {len(only_a)} only in {names[0]} "
            f"(first {only_a[:5]}), {len(only_b)} only in {names[1]} (first {only_b[:5]})"
        )
    if not by_a:
        raise UnpairedRunsError(f"{names[0]} and {names[1]} hold no examples")
    wrong = [i for i in sorted(by_a) if by_a[i].label != by_b[i].label]
    if wrong:
        raise UnpairedRunsError(f"{names[0]} and {names[1]} disagree on the labels of examples {wrong[:5]}")
    return [(by_a[i], by_b[i]) for i in sorted(by_a)]


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of a_only out of a_only + b_only at p = 1/2."""
    if a_only < 0 or b_only < 0:
        raise ValueError(f"discordant counts must be >= 0, got {a_only}, {b_only}")
    if a_only + b_only == 0:
        return 1.0  # no discordant example: nothing tells the runs apart
    return float(binomtest(a_only, a_only + b_only, 0.5, alternative="two-sided").pvalue)


def mcnemar_per_radius(
    pairs: Sequence[tuple[ResultRow, ResultRow]], radii: Sequence[float]
) -> list[McNemarResult]:
    results = []
    for radius in radii:
        a = np.array([certified_at(ra, radius) for ra, _ in pairs])
        b = np.array([certified_at(rb, radius) for _, rb in pairs])
        a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
        results.append(
            McNemarResult(
                float(radius),
                len(pairs),
                float(a.mean()),
                float(b.mean()),
                a_only,
                b_only,
                mcnemar_exact(a_only, b_only),
            )
        )
    return results


def certified_radii(rows: Sequence[ResultRow]) -> np.ndarray:
    """Per example, the radius if certified correctly, else 0: ACR is their mean."""
    return np.array([acr_term(row) for row in rows], dtype=np.float64)


def acr_difference_interval(
    pairs: Sequence[tuple[ResultRow, ResultRow]],
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapInterval:
    """ACR(A) - ACR(B) and its paired percentile bootstrap interval (examples resampled, seeded)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    differences = certified_radii([a for a, _ in pairs]) - certified_radii([b for _, b in pairs])
    generator = np.random.default_rng(seed)
    means = np.empty(resamples)
    # In chunks: 10,000 resamples of 500 examples at once would be 40 MB of indices.
    for start in range(0, resamples, 1000):
        stop = min(resamples, start + 1000)
        picks = generator.integers(0, len(differences), size=(stop - start, len(differences)))
        means[start:stop] = differences[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return BootstrapInterval(float(differences.mean()), float(low), float(high), confidence, resamples, seed)


def paired_report(
    a: Sequence[ResultRow],
    b: Sequence[ResultRow],
    radii: Sequence[float],
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[list[McNemarResult], BootstrapInterval]:
    pairs = paired_rows(a, b)
    return mcnemar_per_radius(pairs, radii), acr_difference_interval(pairs, resamples, confidence, seed)


def holm_over_radii(tests: Sequence[McNemarResult]) -> tuple[list[float | None], int]:
    """Holm-adjusted McNemar p-values (None at a radius with no discordant example: no test) and the
    family size, the number of radii with a test."""
    tested = [i for i, t in enumerate(tests) if t.a_only + t.b_only > 0]
    adjusted: list[float | None] = [None] * len(tests)
    for i, value in zip(tested, holm([tests[i].p_value for i in tested]), strict=True):
        adjusted[i] = value
    return adjusted, len(tested)


def paired_markdown(tests: Sequence[McNemarResult], interval: BootstrapInterval) -> str:
    """The table of McNemar tests per radius (raw and Holm-adjusted) and the line of the ACR difference."""
    adjusted, family = holm_over_radii(tests)
    lines = [
        "| radius | examples | acc A (%) | acc B (%) | only A | only B | McNemar exact p | Holm p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {t.radius:g} | {t.examples} | {100 * t.accuracy_a:.1f} | {100 * t.accuracy_b:.1f} | "
        f"{t.a_only} | {t.b_only} | {t.p_value:.4g} | {'-' if h is None else f'{h:.4g}'} |"
        for t, h in zip(tests, adjusted, strict=True)
    ]
    lines.append("")
    lines.append(
        f"ACR(A) - ACR(B) = {interval.difference:.4f}, {100 * interval.confidence:g}% paired bootstrap "
        f"interval [{interval.low:.4f}, {interval.high:.4f}] ({interval.resamples} resamples of the "
        f"examples, seed {interval.seed})."
    )
    lines.append(
        "only A / only B: examples certified correctly at the radius by one run and not the other; "
        "McNemar's exact test is the two-sided binomial test of only A out of only A + only B at 1/2 "
        "(uncorrected). "
        f"Holm p: Holm's step-down correction over the family of the {family} McNemar test(s) of this "
        "table, the radii with a discordant example (- : none, so no test, outside the family). These "
        "are the only p-values printed here; the bootstrap interval is not a test and is not corrected. "
        "Both condition on the two trained networks: across training seeds use --compare-methods."
    )
    return "\n".join(lines) + "\n"
