"""Cohen et al.'s CERTIFY (ICML 2019): count the candidate class in n fresh copies, one Clopper-Pearson
lower bound at level alpha, radius sigma * PhiInv(p_lower) (an exact radius, not a grid value).

With probability at least 1 - alpha, a non-abstaining prediction is g(x) and g is constant within
the radius (``Smooth.certify`` states it in full).
"""

from __future__ import annotations

import numpy as np

from ddsx.smoothing.bounds import certified_radius, lower_confidence_bound
from ddsx.smoothing.procedures.base import ABSTAIN, Budget, Outcome, Procedure, Rule


class FixedRule(Rule):
    """One look, at n; nothing to decide per radius (K = 0)."""

    def __init__(self, budget: Budget) -> None:
        self.sigma, self.alpha, self.n = budget.sigma, budget.alpha, budget.n
        self.looks = np.array([budget.n], dtype=np.int64)
        self.radii = ()

    def decide(self, look, hits, certified, abandoned):
        return certified, abandoned  # the decision is the bound, taken in outcome()

    def outcome(self, candidate: int, hits: int, samples: int, certified: np.ndarray) -> Outcome:
        p_lower = lower_confidence_bound(hits, self.n, self.alpha)
        if p_lower < 0.5:
            return Outcome(ABSTAIN, 0.0, hits, self.n, p_lower, (), None)
        radius = certified_radius(p_lower, self.sigma)
        return Outcome(candidate, radius, hits, self.n, p_lower, (), self.n)


class Fixed(Procedure):
    name = "fixed"
    parameters = ()  # rows depend on sigma, alpha, n (and n0) only
    radius = "exact"
    selections = ("n0",)  # CERTIFY always selects with n0
    stops_early = False
    summary = "Cohen et al.'s CERTIFY: n noisy copies per example, exact radii"

    def prepare(self, budget: Budget) -> Rule:
        return FixedRule(budget)


PROCEDURE = Fixed()
