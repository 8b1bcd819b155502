"""The cascade certificate (ddsx.smoothing.cascade): hand-computed answers, each level's bounds covered
exactly, the false-certification rate computed exactly at least favourable probabilities, and two
negative controls that break the guarantee in the same harness.

The exact harness. Each level's count is Binomial(n, p_j) of its candidate class (levels drawn
independently; the guarantee itself holds under any dependence). The truth at x is given per level by
p_j and whether the candidate is the level's top class; if it is not, the top class is given all the
rest, 1 - p_j (the most it can hold, the least favourable). Candidates of different levels are
different classes, so answering at another level than the true cascade is always wrong. The true
cascade answers at the first level whose top probability m_j exceeds p0, and the largest radius that
holds for EVERY base classifier with these probabilities is

    R* = min(sigma_k (PhiInv(m_k) - PhiInv(p0)), min over j < k of sigma_j (PhiInv(p0) - PhiInv(m_j)))

(the Lipschitz bound is attained by half-space base classifiers, all pointing the same way). A
certificate (c, R) is false when the true cascade abstains, answers another class, or R > R*. The
probability of a false certificate is summed exactly over all (n + 1)^K count vectors.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from scipy.stats import beta, binom, norm

from ddsx.smoothing.cascade import CascadeAnswer, Kind, Level, Verdict, cascade, combine, level_verdict
from ddsx.smoothing.procedures.base import ABSTAIN

# ----- hand-computed answers -------------------------------------------------------------------------


def cp_lower(count: int, n: int, tail: float) -> float:
    return 0.0 if count == 0 else float(beta.ppf(tail, count, n - count + 1))


def cp_upper(count: int, n: int, tail: float) -> float:
    return 1.0 if count == n else float(beta.ppf(1 - tail, count + 1, n - count))


def test_the_first_confident_level_answers_within_the_higher_levels_margin() -> None:
    # level 1 (sigma 1): 50 of 100 on its candidate; shown below p0 = 0.8 in every class; level 2
    # (sigma 0.5): 99 of 100, confident. alpha 0.01 and 0.002.
    p0 = 0.8
    levels = [Level(1.0, 0.01, 50, 100, 3), Level(0.5, 0.002, 99, 100, 7)]
    top_upper = max(cp_upper(50, 100, 0.005), 1 - cp_lower(50, 100, 0.005))
    margin = 1.0 * (norm.ppf(p0) - norm.ppf(top_upper))
    own = 0.5 * (norm.ppf(cp_lower(99, 100, 0.002)) - norm.ppf(p0))  # the last level: all its alpha
    answer = cascade(levels, p0)
    assert (answer.prediction, answer.level) == (7, 1)
    assert answer.radius == pytest.approx(min(margin, own), rel=1e-9)
    assert own < margin  # here level 2's own radius is the smaller one ...
    # ... and with a less certain level 1 its margin binds: 40 of 100 gives 1 - L closer to p0
    answer = cascade([Level(1.0, 0.01, 40, 100, 3), Level(0.5, 0.002, 99, 100, 7)], p0)
    margin = norm.ppf(p0) - norm.ppf(max(cp_upper(40, 100, 0.005), 1 - cp_lower(40, 100, 0.005)))
    assert margin < own
    assert (answer.prediction, answer.radius) == (7, pytest.approx(margin, rel=1e-9))


def test_a_confident_first_level_answers_with_half_its_alpha() -> None:
    answer = cascade([Level(1.0, 0.01, 95, 100, 2), Level(0.5, 0.01, 100, 100, 5)], 0.6)
    lower = cp_lower(95, 100, 0.005)  # a level above the last splits its alpha between two bounds
    assert (answer.prediction, answer.level, answer.p_lower) == (2, 0, pytest.approx(lower, rel=1e-12))
    assert answer.radius == pytest.approx(norm.ppf(lower) - norm.ppf(0.6), rel=1e-9)


def test_an_undecided_level_makes_the_cascade_abstain_there() -> None:
    # 70 of 100 at p0 = 0.7: neither above p0 nor below it in every class; level 2 is never consulted.
    answer = cascade([Level(1.0, 0.01, 70, 100, 2), Level(0.5, 0.01, 100, 100, 5)], 0.7)
    assert (answer.prediction, answer.radius, answer.level) == (ABSTAIN, 0.0, 0)
    # the last level not confident: abstain at the last level
    answer = cascade([Level(1.0, 0.01, 50, 100, 2), Level(0.5, 0.01, 60, 100, 5)], 0.8)
    assert (answer.prediction, answer.level) == (ABSTAIN, 1)


def test_p0_one_half_can_show_no_level_non_confident() -> None:
    # U < 1/2 and 1 - L < 1/2 cannot both hold: every count is confident or undecided.
    kinds = {level_verdict(Level(1.0, 0.01, a, 100, 0), 0.5, last=False).kind for a in range(101)}
    assert kinds == {Kind.CONFIDENT, Kind.UNDECIDED}


def test_one_level_at_p0_one_half_is_cohen_et_al() -> None:
    answer = cascade([Level(0.25, 0.001, 980, 1000, 4)], 0.5)
    assert answer.radius == pytest.approx(0.25 * norm.ppf(cp_lower(980, 1000, 0.001)), rel=1e-9)


def test_refuses_unordered_levels_a_bad_threshold_and_a_confident_level_without_class() -> None:
    with pytest.raises(ValueError, match="strictly decrease"):
        cascade([Level(0.5, 0.01, 1, 2, 0), Level(0.5, 0.01, 1, 2, 0)], 0.6)
    with pytest.raises(ValueError, match=r"\[0.5, 1\)"):
        cascade([Level(0.5, 0.01, 1, 2, 0)], 0.4)
    with pytest.raises(ValueError, match="names no candidate"):
        combine([Verdict(Kind.CONFIDENT, 0.3, 0.9)], [ABSTAIN])


# ----- each level's claim, covered exactly -------------------------------------------------------


def claim_fails(verdict: Verdict, sigma: float, p0: float, p: float, top: bool) -> bool:
    """Whether the level's claim is false for candidate probability p (top class: p, else 1 - p)."""
    if verdict.kind is Kind.CONFIDENT:
        return p < verdict.p_lower
    if verdict.kind is Kind.NON_CONFIDENT:
        bound = norm.cdf(norm.ppf(p0) - verdict.radius / sigma)  # the top bound the radius came from
        return (p if top else 1 - p) > bound * (1 + 1e-12)
    return False


P_GRID = sorted(set(np.round(np.linspace(0.01, 0.99, 50), 4)))


def level_failure(n: int, alpha: float, p0: float, last: bool, p: float, top: bool) -> float:
    pmf = binom.pmf(np.arange(n + 1), n, p)
    verdicts = [level_verdict(Level(1.0, alpha, a, n, 0), p0, last) for a in range(n + 1)]
    return float(sum(pmf[a] for a, v in enumerate(verdicts) if claim_fails(v, 1.0, p0, p, top)))


@pytest.mark.parametrize("last", [False, True])
def test_each_level_claim_fails_with_probability_at_most_its_alpha(last: bool) -> None:
    n, alpha, p0 = 40, 0.1, 0.7
    grid = sorted(set(P_GRID) | {p0 - 1e-9, p0 + 1e-9})
    worst = max(
        level_failure(n, alpha, p0, last, p, top) for p in grid for top in (True, False) if top or p <= 0.5
    )
    assert worst <= alpha
    assert worst > alpha / 4  # the harness reaches the level's budget's order, it is not vacuous


# ----- the cascade, exactly ----------------------------------------------------------------------


def outcome_table(sigmas, alphas, n, p0, decide=None):
    """(level answered or -1, radius) for every count vector; ``decide`` replaces the cascade's
    combination of the levels' verdicts (the negative controls)."""
    k = len(sigmas)
    verdicts = [
        [level_verdict(Level(sigmas[j], alphas[j], a, n, j), p0, j == k - 1) for a in range(n + 1)]
        for j in range(k)
    ]
    level = np.full((n + 1,) * k, -1)
    radius = np.zeros((n + 1,) * k)
    for counts in itertools.product(range(n + 1), repeat=k):
        chosen = [verdicts[j][a] for j, a in enumerate(counts)]
        answer = (decide or combine)(chosen, list(range(k)))
        if answer.prediction != ABSTAIN:
            level[counts], radius[counts] = answer.level, answer.radius
    return level, radius


def false_certification_rate(level, radius, sigmas, n, p0, ps, tops) -> float:
    tops_m = [p if top else 1 - p for p, top in zip(ps, tops, strict=True)]
    true = next((j for j, m in enumerate(tops_m) if m > p0), None)
    if true is None:
        false = level >= 0
    else:
        rstar = sigmas[true] * (norm.ppf(tops_m[true]) - norm.ppf(p0))
        for j in range(true):
            rstar = min(rstar, sigmas[j] * (norm.ppf(p0) - norm.ppf(tops_m[j])))
        right = (level == true) & tops[true] & (radius <= rstar * (1 + 1e-12))
        false = (level >= 0) & ~right
    probability = false.astype(np.float64)
    for p in ps:  # sum out the levels one at a time, each Binomial(n, p_j)
        probability = np.tensordot(binomial(n, p), probability, axes=([0], [0]))
    return float(probability)


@functools.cache
def binomial(n: int, p: float) -> np.ndarray:
    return binom.pmf(np.arange(n + 1), n, p)


def worst_rate(table, sigmas, n, p0, points: int = 25) -> float:
    """The largest false-certification rate over a grid of true probabilities (``points`` evenly spaced,
    plus 1/2 and the points around p0, where the two ways of being wrong meet) at every level."""
    grid = np.round(np.linspace(0.02, 0.98, points), 4)
    grid = sorted(set(grid) | {0.5, p0 - 0.01, p0 - 1e-9, p0 + 1e-9})
    states = [(p, True) for p in grid] + [(p, False) for p in grid if p <= 0.5]
    return max(
        false_certification_rate(*table, sigmas, n, p0, [s[0] for s in combo], [s[1] for s in combo])
        for combo in itertools.product(states, repeat=len(sigmas))
    )


SIGMAS, N, P0, ALPHA = (1.0, 0.5), 30, 0.7, 0.2


@pytest.mark.parametrize("share", [0.5, 0.8])
def test_false_certification_rate_is_at_most_alpha(share: float) -> None:
    alphas = (share * ALPHA, (1 - share) * ALPHA)
    worst = worst_rate(outcome_table(SIGMAS, alphas, N, P0), SIGMAS, N, P0)
    assert worst <= ALPHA
    assert worst > ALPHA / 4


def test_false_certification_rate_of_three_levels_is_at_most_alpha() -> None:
    sigmas, n, alphas = (1.0, 0.5, 0.25), 12, (0.1, 0.05, 0.05)
    worst = worst_rate(outcome_table(sigmas, alphas, n, P0), sigmas, n, P0, points=9)
    assert sum(alphas) / 10 < worst <= sum(alphas)


def test_negative_control_without_the_split_of_a_level_alpha_exceeds_alpha() -> None:
    # Each bound of a level above the last at the level's whole alpha (not half): both ways of being
    # wrong near p0 add up, and with most of the budget on level 1 the rate passes alpha.
    alphas = (0.8 * ALPHA, 0.2 * ALPHA)
    unsplit = (2 * alphas[0], alphas[1])  # level_verdict halves a passing level's alpha: undo it
    assert worst_rate(outcome_table(SIGMAS, unsplit, N, P0), SIGMAS, N, P0) > ALPHA


def skip_unconfident_levels(verdicts, candidates):
    """The negative control: the first confident level answers with its own radius, whether or not
    the levels above it were shown non-confident."""
    for index, verdict in enumerate(verdicts):
        if verdict.kind is Kind.CONFIDENT:
            return CascadeAnswer(candidates[index], verdict.radius, index, verdict.p_lower)
    return CascadeAnswer(ABSTAIN, 0.0, len(verdicts) - 1, 0.0)


def test_negative_control_that_ignores_the_higher_levels_exceeds_alpha() -> None:
    table = outcome_table(SIGMAS, (ALPHA / 2, ALPHA / 2), N, P0, decide=skip_unconfident_levels)
    assert worst_rate(table, SIGMAS, N, P0) > 2 * ALPHA
