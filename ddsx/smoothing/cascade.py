"""Cascaded smoothing across noise levels (Jeong & Shin, NeurIPS 2023), as plain functions of counts.

The classifier. Levels k = 1..K with sigma_1 > ... > sigma_K, each a smoothed classifier
f_k(x)_c = P(h_k(x + sigma_k eps) = c) (h_k: the base classifier at that noise level, e.g. the
classifier behind the denoiser at its t*), and a threshold p0 in [1/2, 1). The cascade g(x) is the
class argmax_c f_k(x)_c of the FIRST level k whose top probability exceeds p0; it abstains when no
level does. Since p0 >= 1/2, a level above p0 has exactly one such class.

What one call of :func:`cascade` certifies. Each level k contributes the count A_k of its candidate
class c_k among n_k fresh noisy copies, the candidate having been chosen from copies independent of
those (CERTIFY's n0 selection). Level k spends alpha_k, and alpha = sum_k alpha_k. The answer is
(c, R) with R > 0, or an abstention (-1, 0). Then, over the noise of all levels together,

    P(the answer is (c, R) and g(x') != c for some x' with ||x' - x|| < R) <= alpha,

for every base classifier, whatever the dependence between the levels' noise (only a union bound
over levels is used). An abstention certifies nothing; it is a possible output whenever a level can
be shown neither confident nor non-confident, or the last level is not confident.

Why. Phi^-1(f_k(. )_c) is 1/sigma_k-Lipschitz for every class (Salman et al. 2019, the argument
behind Cohen et al.'s radius), so

- level k confident in c: f_k(x)_c >= L > p0 keeps f_k(x')_c > p0 for ||x' - x|| < sigma_k (Phi^-1(L)
  - Phi^-1(p0)): level k stays confident in c there;
- level j non-confident: max_c f_j(x)_c <= T < p0 keeps every f_j(x')_c < p0 for ||x' - x|| <
  sigma_j (Phi^-1(p0) - Phi^-1(T)): level j stays non-confident there.

The cascade answers c at level k with R = min(level k's confidence radius, every higher level's
non-confidence radius): within R levels 1..k-1 stay below p0 and level k stays above it in c, so
g(x') = c. If a level is neither shown confident nor non-confident, the cascade abstains there (the
levels below it cannot be reached without knowing it is non-confident).

The bounds, from the candidate's count alone (a result row stores only that count). With L and U
one-sided Clopper-Pearson bounds on p = f_j(x)_{c_j}, every other class has probability at most
1 - p, so T = max(U, 1 - L) bounds the top probability. Its failure is a failure of one of the two
bounds on p: if c_j is the top class, T fails only when p > U; if it is not, the top class has at
most 1 - p, and T fails only when p < L. A level above the last may be used either way (shown
confident with L, or non-confident with T), so its two bounds are taken at alpha_j / 2 each, and
P(level j's claim fails) <= alpha_j / 2 + alpha_j / 2. The last level is only ever shown confident:
its L takes the whole alpha_K. This is conservative: a histogram of all classes would bound the top
probability by max_c U_c at level alpha_j (only the true top class can break it), but rows do not
store one; it also means that with p0 = 1/2 no level can be shown non-confident (U < 1/2 and
1 - L < 1/2 cannot both hold), so such a cascade answers at its first level or abstains.

The guarantee holds for the open ball ||x' - x|| < R, as Cohen et al.'s does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from scipy.stats import norm

from ddsx.smoothing.bounds import lower_confidence_bound
from ddsx.smoothing.procedures.base import ABSTAIN


class Kind(Enum):
    """What the counts show about one level at x."""

    CONFIDENT = "confident"  # its candidate's probability is above p0
    NON_CONFIDENT = "non-confident"  # every class's probability is below p0
    UNDECIDED = "undecided"  # neither could be shown


@dataclass(frozen=True)
class Level:
    """One noise level's counts for one example: ``count`` of ``n`` fresh copies gave ``candidate``
    (ABSTAIN where the file kept no candidate), and the share ``alpha`` of the failure probability."""

    sigma: float
    alpha: float
    count: int
    n: int
    candidate: int


@dataclass(frozen=True)
class Verdict:
    """What one level shows: its kind, the radius within which that holds (0 when undecided), and the
    lower bound on the candidate's probability it used."""

    kind: Kind
    radius: float
    p_lower: float


@dataclass(frozen=True)
class CascadeAnswer:
    """The cascade's answer: class (ABSTAIN = -1) and radius, the index of the level where it stopped
    (answered or abstained), and that level's lower bound."""

    prediction: int
    radius: float
    level: int
    p_lower: float


def check_threshold(p0: float) -> float:
    """``p0`` as a float in [1/2, 1); ValueError otherwise (below 1/2 two classes could both pass)."""
    p0 = float(p0)
    if not 0.5 <= p0 < 1.0:
        raise ValueError(f"the confidence threshold p0 must be in [0.5, 1), got {p0!r}")
    return p0


def level_verdict(level: Level, p0: float, last: bool) -> Verdict:
    """Whether ``level`` is shown confident (in its candidate) or non-confident, and within what radius.

    ``last``: the cascade's last level, never used as non-confident, whose lower bound takes the whole
    alpha; every other level splits its alpha between its two one-sided bounds (module docstring).
    """
    p0 = check_threshold(p0)
    tail = level.alpha if last else level.alpha / 2.0
    p_lower = lower_confidence_bound(level.count, level.n, tail)
    if p_lower > p0:
        return Verdict(Kind.CONFIDENT, float(level.sigma * (norm.ppf(p_lower) - norm.ppf(p0))), p_lower)
    if not last:
        # Clopper-Pearson's upper bound on p is one minus its lower bound on 1 - p.
        p_upper = 1.0 - lower_confidence_bound(level.n - level.count, level.n, tail)
        top_upper = max(p_upper, 1.0 - p_lower)
        if top_upper < p0:
            radius = float(level.sigma * (norm.ppf(p0) - norm.ppf(top_upper)))
            return Verdict(Kind.NON_CONFIDENT, radius, p_lower)
    return Verdict(Kind.UNDECIDED, 0.0, p_lower)


def combine(verdicts: Sequence[Verdict], candidates: Sequence[int]) -> CascadeAnswer:
    """The cascade's answer from each level's verdict, highest sigma first (see :func:`cascade`)."""
    if not verdicts or len(verdicts) != len(candidates):
        raise ValueError("a cascade needs one verdict and one candidate per level, at least one level")
    margin = float("inf")  # the smallest non-confidence radius of the levels passed so far
    for index, (verdict, candidate) in enumerate(zip(verdicts, candidates, strict=True)):
        if verdict.kind is Kind.CONFIDENT:
            if candidate == ABSTAIN:
                raise ValueError(f"level {index} is confident but names no candidate class")
            return CascadeAnswer(int(candidate), min(verdict.radius, margin), index, verdict.p_lower)
        if verdict.kind is Kind.UNDECIDED:
            return CascadeAnswer(ABSTAIN, 0.0, index, verdict.p_lower)
        margin = min(margin, verdict.radius)
    raise ValueError("the last level of a cascade cannot be non-confident")  # level_verdict(last=True)


def cascade(levels: Sequence[Level], p0: float) -> CascadeAnswer:
    """Certify one example with the cascade over ``levels`` (sigma strictly decreasing); the guarantee
    is the module docstring's, at alpha = the sum of the levels' alphas."""
    sigmas = [level.sigma for level in levels]
    if any(a <= b for a, b in zip(sigmas, sigmas[1:], strict=False)):
        raise ValueError(f"a cascade's sigmas must strictly decrease, got {sigmas}")
    last = len(levels) - 1
    verdicts = [level_verdict(level, p0, index == last) for index, level in enumerate(levels)]
    return combine(verdicts, [level.candidate for level in levels])
