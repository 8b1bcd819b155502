"""Union-bound Clopper-Pearson confidence sequence (Voracek et al., arXiv 2406.17830): the simplest
valid way to look at the counts more than once.

Derivation. Looks at t_1 < ... < t_J = n (every ``check_every`` copies). Look j spends

    alpha_j = alpha * 6 / (pi^2 j^2),   sum over j >= 1 of alpha_j = alpha * (6 / pi^2) * (pi^2 / 6) = alpha,

and certifies r_k (threshold p_k = Phi(r_k / sigma)) at look j iff the one-sided Clopper-Pearson
lower bound at level alpha_j on (A_j, t_j) is >= p_k, i.e. binom.sf(A_j - 1, t_j, p_k) <= alpha_j.
If the true p_A <= p_k, A_j is stochastically at most Binomial(t_j, p_k), so each look certifies
falsely with probability <= alpha_j, and by the union bound P(r_k is ever certified) <= sum_j alpha_j
<= alpha, whatever rule stops the sampling (stopping removes looks, never adds a certificate). The
spending is front-loaded (alpha_1 = 0.61 alpha), where most points are decided, and needs no J in
advance. As in SEQ-CERT, radii are nested by a running max of the boundaries over smaller radii (more
conservative only), and a radius is given up by the same futility rule (``futility_boundaries``:
free, since giving up only lowers the chance of certifying). Every certificate is a fixed-n CP
certificate at alpha_j <= alpha, so the run-time guard holds. The boundaries take a second to
compute and are never cached (nothing on disk can change them).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom, norm

from ddsx.smoothing.procedures.base import Budget, Procedure, Rule
from ddsx.smoothing.procedures.grid import PlanRule
from ddsx.smoothing.sequential_boundaries import (
    SequentialPlan,
    _check_times,
    _first_true,
    futility_boundaries,
    nest,
)


def look_levels(looks: int, alpha: float) -> np.ndarray:
    """(J,) alpha_j = alpha * 6 / (pi^2 j^2) for j = 1..J: the share of alpha each look spends."""
    j = np.arange(1, looks + 1, dtype=np.float64)
    return alpha * 6.0 / (math.pi**2 * j**2)


def union_cp_plan(
    sigma: float, radii: tuple[float, ...], alpha: float, n: int, check_every: int
) -> SequentialPlan:
    """The boundaries: certify_at[j, k] = smallest A with binom.sf(A - 1, t_j, p_k) <= alpha_j, nested."""
    check_times = _check_times(n, check_every)
    levels = look_levels(len(check_times), alpha)
    p = norm.cdf(np.asarray(radii, dtype=np.float64) / sigma)
    certify_at = np.empty((len(check_times), len(radii)), dtype=np.int64)
    for k, pk in enumerate(p):
        certify_at[:, k] = _first_true(
            check_times,
            lambda a, t, pk=pk: binom.sf(a - 1, t, pk) <= levels[np.searchsorted(check_times, t)],
        )
    certify_at = nest(certify_at)
    z = np.asarray(radii, dtype=np.float64) / sigma
    give_up_at = futility_boundaries(check_times, z, certify_at)
    return SequentialPlan(
        sigma, radii, alpha, n, check_every, check_times, certify_at, give_up_at, certify_at[-1]
    )


class UnionCP(Procedure):
    name = "union_cp"
    parameters = ("radii", "check_every")
    radius = "grid"
    selections = ("label", "n0")
    stops_early = True
    summary = "union-bound Clopper-Pearson sequence (Voracek et al.): CP at alpha 6/(pi^2 j^2) at look j"

    def prepare(self, budget: Budget) -> Rule:
        return PlanRule(union_cp_plan(budget.sigma, budget.radii, budget.alpha, budget.n, budget.check_every))


PROCEDURE = UnionCP()
