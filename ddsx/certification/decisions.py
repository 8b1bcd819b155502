"""Per-example decisions from counts: what the engine asks for next and the certificate at the end.

The engine feeds each decision the number of hits (noisy copies classified as its candidate class)
among the samples it drew; the statistics themselves live in ``ddsx.smoothing``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ddsx.certification.settings import CertifySettings
from ddsx.smoothing import ABSTAIN
from ddsx.smoothing.bounds import certified_radius, lower_confidence_bound
from ddsx.smoothing.sequential import SequentialPlan, SequentialTest, sequential_plan


@dataclass(frozen=True)
class Outcome:
    """prediction (ABSTAIN = -1), radius, hits among ``samples`` copies, the CP lower bound (fixed mode)."""

    prediction: int
    radius: float
    count: int
    samples: int
    p_lower: float | None


class Decision(Protocol):
    candidate: int

    @property
    def done(self) -> bool: ...

    def request(self) -> int:
        """Samples wanted before the next look (> 0 while not done)."""

    def absorb(self, hits: int | torch.Tensor, samples: int) -> None:
        """``hits`` of ``samples`` new copies (samples <= request()) were the candidate class.

        ``hits`` may be a 0-d tensor on the device: it is read (a host synchronisation) only when a
        decision needs the number, so the sampling loop does not wait for the device every batch.
        """

    def outcome(self, settings: CertifySettings) -> Outcome: ...


class FixedDecision:
    """Cohen et al.'s CERTIFY after the selection: count the candidate in n copies, bound, radius.

    With probability at least 1 - alpha, a non-abstaining prediction is g(x) and g is constant
    within the radius (the same statements as ``Smooth.certify``, from the same functions).
    """

    def __init__(self, candidate: int, n: int) -> None:
        self.candidate, self.n = candidate, n
        self.count = self.seen = 0

    @property
    def done(self) -> bool:
        return self.seen >= self.n

    def request(self) -> int:
        return self.n - self.seen

    def absorb(self, hits: int | torch.Tensor, samples: int) -> None:
        self.count = self.count + hits  # stays on the device until the outcome reads it
        self.seen += samples

    def outcome(self, settings: CertifySettings) -> Outcome:
        count = int(self.count)
        p_lower = lower_confidence_bound(count, self.n, settings.alpha)
        if p_lower < 0.5:
            return Outcome(ABSTAIN, 0.0, count, self.n, p_lower)
        radius = certified_radius(p_lower, settings.require_sigma())
        return Outcome(self.candidate, radius, count, self.n, p_lower)


class SequentialDecision:
    """SEQ-CERT (sequential.md) after the selection: a ``SequentialTest`` fed up to its check times.

    The engine may hand over the samples up to a check time in pieces (a batch boundary cuts
    them); the test looks only at its check times, so the decision does not depend on the packing. With probability at least 1 - alpha, every certified grid radius is at most the true
    radius of g at x (``Smooth.certify_sequential`` states the guarantee in full).
    """

    def __init__(self, candidate: int, plan: SequentialPlan) -> None:
        self.candidate = candidate
        self.test = SequentialTest(plan)
        # Hits and samples of the current chunk not yet handed to the test (read at its check time).
        self.pending_hits: int | torch.Tensor = 0
        self.pending_samples = 0

    @property
    def done(self) -> bool:
        return self.test.done

    def request(self) -> int:
        return self.test.next_chunk() - self.pending_samples

    def absorb(self, hits: int | torch.Tensor, samples: int) -> None:
        self.pending_hits = self.pending_hits + hits
        self.pending_samples += samples
        if self.pending_samples == self.test.next_chunk():  # a check time: the test looks now
            self.test.update(int(self.pending_hits), self.pending_samples)
            self.pending_hits, self.pending_samples = 0, 0

    def outcome(self, settings: CertifySettings) -> Outcome:
        radius = self.test.certified_radius()
        if radius is None:
            return Outcome(ABSTAIN, 0.0, self.test.hits, self.test.samples, None)
        return Outcome(self.candidate, float(radius), self.test.hits, self.test.samples, None)


def plan_for(settings: CertifySettings) -> SequentialPlan | None:
    """The SEQ-CERT boundaries of these settings (cached on disk by ddsx.smoothing); None in fixed mode."""
    if settings.mode != "sequential":
        return None
    return sequential_plan(
        settings.require_sigma(),
        sorted(set(settings.radii)),
        settings.alpha,
        settings.n,
        settings.check_every,
    )


def make_decision(settings: CertifySettings, candidate: int, plan: SequentialPlan | None) -> Decision:
    """The decision of ``settings.mode`` for one example and class under test."""
    if settings.mode == "fixed":
        return FixedDecision(candidate, settings.n)
    if plan is None:
        raise ValueError("sequential mode needs the plan (decisions.plan_for)")
    return SequentialDecision(candidate, plan)
