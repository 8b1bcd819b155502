"""The rule of every test whose decisions are integer boundaries on a radii grid (a SequentialPlan).

SEQ-CERT and the union-bound Clopper-Pearson sequence differ only in how their boundaries are
computed; deciding from them is the same: compare counts with ``certify_at`` / ``give_up_at`` at each
check time (``ddsx.smoothing.sequential.decide``), then the run-time guard.
"""

from __future__ import annotations

import numpy as np

from ddsx.smoothing.procedures.base import ABSTAIN, Outcome, Rule
from ddsx.smoothing.sequential import SequentialPlan, decide, guard


class PlanRule(Rule):
    """Decisions from a plan's boundaries; the reported radius is the largest certified grid radius."""

    def __init__(self, plan: SequentialPlan) -> None:
        self.plan = plan
        self.looks = plan.check_times
        self.radii = plan.radii

    def decide(self, look, hits, certified, abandoned):
        new_certified, new_abandoned = decide(self.plan, look, hits, certified, abandoned)
        guard(self.plan, hits, int(self.looks[look]), new_certified & ~certified)
        return new_certified, new_abandoned

    def outcome(self, candidate: int, hits: int, samples: int, certified: np.ndarray) -> Outcome:
        indices = np.flatnonzero(certified)
        flags = tuple(bool(c) for c in certified)
        if len(indices) == 0:
            return Outcome(ABSTAIN, 0.0, hits, samples, None, flags, None)
        return Outcome(candidate, float(self.radii[int(indices[-1])]), hits, samples, None, flags, None)
