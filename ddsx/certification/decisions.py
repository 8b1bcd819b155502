"""Per-example decisions from counts: what the engine asks for next and the certificate at the end.

The engine feeds each decision the number of hits (noisy copies classified as its candidate class)
among the samples it drew; the statistics themselves live in ``ddsx.smoothing``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ddsx.certification.settings import CertifySettings
from ddsx.smoothing import ABSTAIN
from ddsx.smoothing.bounds import certified_radius, lower_confidence_bound


@dataclass(frozen=True)
class Outcome:
    """prediction (ABSTAIN = -1), radius, hits among ``samples`` copies, the CP lower bound on them."""

    prediction: int
    radius: float
    count: int
    samples: int
    p_lower: float


class Decision(Protocol):
    candidate: int

    @property
    def done(self) -> bool: ...

    def request(self) -> int:
        """Samples wanted before the next look (> 0 while not done)."""

    def absorb(self, hits: int, samples: int) -> None:
        """``hits`` of ``samples`` new copies (samples <= request()) were the candidate class."""

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

    def absorb(self, hits: int, samples: int) -> None:
        self.count += hits
        self.seen += samples

    def outcome(self, settings: CertifySettings) -> Outcome:
        p_lower = lower_confidence_bound(self.count, self.n, settings.alpha)
        if p_lower < 0.5:
            return Outcome(ABSTAIN, 0.0, self.count, self.n, p_lower)
        radius = certified_radius(p_lower, settings.require_sigma())
        return Outcome(self.candidate, radius, self.count, self.n, p_lower)


def make_decision(settings: CertifySettings, candidate: int) -> Decision:
    """The decision of ``settings.mode`` for one example and class under test."""
    if settings.mode == "fixed":
        return FixedDecision(candidate, settings.n)
    raise NotImplementedError(f"certify.mode={settings.mode!r} is not available in this build")
