"""SEQ-CERT (docs/sequential.md): anytime-valid certification on the radii grid, stopping as soon as
every grid radius is certified or abandoned; n is the budget.

Per radius: alpha / 5 from Ville's inequality on a one-sided mixture e-process, 0.8 alpha from one
Clopper-Pearson look at n (``ddsx.smoothing.sequential_boundaries``). The boundaries are cached on
disk and re-verified against the e-process on every load.
"""

from __future__ import annotations

from ddsx.smoothing.procedures.base import Budget, Procedure, Rule
from ddsx.smoothing.procedures.grid import PlanRule
from ddsx.smoothing.sequential_boundaries import sequential_plan


class SeqCert(Procedure):
    name = "sequential"
    parameters = ("radii", "check_every")  # the boundaries depend on the grid and the looks
    radius = "grid"
    selections = ("label", "n0")
    stops_early = True
    summary = "SEQ-CERT: mixture e-process + final CP look, stops once every grid radius is decided"

    def prepare(self, budget: Budget) -> Rule:
        return PlanRule(
            sequential_plan(budget.sigma, budget.radii, budget.alpha, budget.n, budget.check_every)
        )


PROCEDURE = SeqCert()
