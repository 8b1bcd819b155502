"""SEQ-CERT (docs/sequential.md): anytime-valid certification of a Bernoulli stream against a radii grid.

The stream is X_i = 1 when the base classifier's label on the i-th noisy copy equals the tested
class. :class:`SequentialTest` follows one stream; :func:`decide` is the same decision rule on many
streams at once (what the engine and the simulations use); both compare integer counts with the
integer boundaries of a :class:`SequentialPlan`.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binom

from ddsx.smoothing.sequential_boundaries import SequentialPlan, compute_plan, sequential_plan

__all__ = ["SequentialPlan", "SequentialTest", "compute_plan", "decide", "guard", "sequential_plan"]


def decide(
    plan: SequentialPlan, check: int, hits: np.ndarray, certified: np.ndarray, abandoned: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply check ``check`` of ``plan`` to N streams; returns the new (certified, abandoned), (N, K) bool.

    hits: (N,) counts after ``plan.check_times[check]`` samples. A radius decided earlier keeps its
    decision; an undecided one is certified when hits reach certify_at, else abandoned when hits are
    at most give_up_at. Nesting of the boundaries makes both sets nested (a prefix and a suffix).
    """
    hits = np.asarray(hits, dtype=np.int64)[:, None]
    undecided = ~(certified | abandoned)
    newly_certified = undecided & (hits >= plan.certify_at[check][None, :])
    newly_abandoned = undecided & ~newly_certified & (hits <= plan.give_up_at[check][None, :])
    return certified | newly_certified, abandoned | newly_abandoned


class SequentialTest:
    """SEQ-CERT on one stream (one example, one classifier).

    Feed it chunks with :meth:`update`; a decision is made whenever the running sample count reaches
    a check time, so a chunk must never cross one (:meth:`next_chunk` says how many samples are
    still needed to reach the next). ``done`` once every radius is certified or abandoned (at the
    latest at ``plan.n_max``).
    """

    def __init__(self, plan: SequentialPlan) -> None:
        self.plan = plan
        self.samples = 0
        self.hits = 0
        self._check = 0  # index of the next check time
        k = len(plan.radii)
        self._certified = np.zeros((1, k), dtype=bool)
        self._abandoned = np.zeros((1, k), dtype=bool)

    @property
    def done(self) -> bool:
        return bool((self._certified | self._abandoned).all()) or self._check >= len(self.plan.check_times)

    def next_chunk(self) -> int:
        """Samples still needed to reach the next check time (0 when done)."""
        if self.done:
            return 0
        return int(self.plan.check_times[self._check]) - self.samples

    def update(self, hits: int, samples: int) -> None:
        """Add a chunk of ``samples`` noisy copies of which ``hits`` were the tested class."""
        hits, samples = int(hits), int(samples)
        if self.done:
            raise RuntimeError("the sequential test is already decided")
        if samples < 1 or not 0 <= hits <= samples:
            raise ValueError(
                f"need samples >= 1 and 0 <= hits <= samples, got hits={hits}, samples={samples}"
            )
        if samples > self.next_chunk():
            raise ValueError(
                f"a chunk of {samples} crosses the check time {self.plan.check_times[self._check]} "
                f"(at {self.samples} samples now)"
            )
        self.samples += samples
        self.hits += hits
        if self.samples < self.plan.check_times[self._check]:
            return
        before = self._certified[0].copy()
        self._certified, self._abandoned = decide(
            self.plan, self._check, np.array([self.hits]), self._certified, self._abandoned
        )
        self._check += 1
        self._guard(self._certified[0] & ~before)

    def certified(self) -> list[bool]:
        """Per grid radius, whether it is certified so far."""
        return [bool(c) for c in self._certified[0]]

    def certified_radius(self) -> float | None:
        """The largest certified grid radius; None when nothing is certified."""
        indices = np.flatnonzero(self._certified[0])
        return None if len(indices) == 0 else self.plan.radii[int(indices[-1])]

    def _guard(self, newly: np.ndarray) -> None:
        guard(self.plan, np.array([self.hits]), self.samples, newly[None, :])


def guard(plan: SequentialPlan, hits: np.ndarray, samples: int, newly: np.ndarray) -> None:
    """Never fires: every new certificate (newly: (N, K) bool, counts ``hits`` (N,) after ``samples``)
    must also be a fixed-n CP certificate at alpha on these counts (docs/sequential.md section 4, guard)."""
    rows, radii = np.nonzero(newly)
    if len(rows) == 0:
        return
    tail = binom.sf(np.asarray(hits)[rows] - 1, samples, plan.thresholds[radii])
    if not np.all(tail <= plan.alpha):
        worst = int(np.argmax(tail))
        raise AssertionError(
            f"SEQ-CERT guard: certificate at {int(np.asarray(hits)[rows[worst]])}/{samples} is not a fixed-n "
            f"CP certificate (binom.sf = {tail.max()} > alpha = {plan.alpha})"
        )
