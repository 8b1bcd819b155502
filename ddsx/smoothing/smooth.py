"""The smoothed classifier g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c) and its Monte Carlo algorithms.

Follows Cohen, Rosenfeld & Kolter (ICML 2019) and their reference code (locuslab/smoothing),
with the same guarantees, but draws noise on the input's device, counts labels with ``bincount``
on the device and never copies the input per sample.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ddsx.smoothing.bounds import top_two_p_value
from ddsx.smoothing.loop import CertifyLoop, Example
from ddsx.smoothing.noise import gaussian_batches
from ddsx.smoothing.precision import AUTOCAST_DTYPES, autocast, resolve_autocast_dtype
from ddsx.smoothing.procedures.base import ABSTAIN, Budget, Outcome, Rule
from ddsx.smoothing.procedures.fixed import FixedRule
from ddsx.smoothing.procedures.grid import PlanRule
from ddsx.smoothing.sequential import SequentialPlan
from ddsx.utils.logging import get_logger

__all__ = [
    "ABSTAIN",
    "AUTOCAST_DTYPES",
    "Certificate",
    "SequentialCertificate",
    "Smooth",
    "resolve_autocast_dtype",
]


@dataclass(frozen=True)
class Certificate:
    """The answer of :meth:`Smooth.certify` for one input.

    Attributes:
        prediction: the certified class, or ``ABSTAIN`` (-1).
        radius: l2 radius in [0,1] pixel units; 0.0 when abstaining.
        count: how many of the ``n`` noisy copies the base classifier put in the candidate class.
        p_lower: (1 - alpha) lower confidence bound on the candidate class's probability.
        n0: noisy copies used to pick the candidate class.
        n: noisy copies used to estimate its probability.
    """

    prediction: int
    radius: float
    count: int
    p_lower: float
    n0: int
    n: int


@dataclass(frozen=True)
class SequentialCertificate:
    """The answer of :meth:`Smooth.certify_sequential` for one input (a grid certificate).

    Attributes:
        prediction: the tested class (the label, or the n0 candidate), or ``ABSTAIN`` (-1) when no
            grid radius is certified.
        radius: the largest certified grid radius; 0.0 when none (then prediction is ABSTAIN).
        count: noisy copies, of the ``samples`` tested, that the base classifier put in the tested class.
        samples: noisy copies used by the sequential test (excluding the n0 selection copies).
        n0: noisy copies used to pick the candidate class (0 when the label was tested).
        certified: per grid radius of the plan, whether it is certified (nested: a prefix).
        certified_at: test copies after which the reported radius was certified (None: abstained).
    """

    prediction: int
    radius: float
    count: int
    samples: int
    n0: int
    certified: tuple[bool, ...]
    certified_at: int | None = None


class Smooth:
    """The smoothed version of a base classifier f at noise level sigma.

    Args:
        base_classifier: maps [0,1] images (N, C, H, W) to logits (N, num_classes); put it in eval
            mode first. Noisy inputs are not clipped to [0,1] (the guarantee needs the raw Gaussian).
        num_classes: K.
        sigma: noise standard deviation in [0,1] pixel units, > 0.
        autocast_dtype: run the base classifier under ``torch.autocast`` with this dtype (None:
            full precision). Noise is always drawn and added in the input's dtype; a different
            precision changes f, never the validity of the guarantees, which hold for whatever
            function f the forward pass computes.
    """

    def __init__(
        self,
        base_classifier: Callable[[torch.Tensor], torch.Tensor],
        num_classes: int,
        sigma: float,
        autocast_dtype: str | torch.dtype | None = None,
    ) -> None:
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if not float(sigma) > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.base_classifier = base_classifier
        self.num_classes = int(num_classes)
        self.sigma = float(sigma)
        self.autocast_dtype = resolve_autocast_dtype(autocast_dtype)

    def certify(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> Certificate:
        """Monte Carlo algorithm CERTIFY for g at x.

        With probability at least 1 - alpha over the noise drawn here, if the prediction is not
        ABSTAIN then it equals g(x), and g(x + delta) = g(x) for every delta with
        ||delta||_2 < radius. The candidate class comes from ``n0`` noisy copies and its
        probability is bounded from ``n`` fresh ones, so the two samples are independent.

        Args:
            x: one image (C, H, W) in [0,1], on the device the base classifier runs on.
            n0: noisy copies for selecting the candidate class.
            n: noisy copies for the lower confidence bound.
            alpha: failure probability, in (0, 1).
            batch_size: noisy copies per forward pass (changes speed, never the result when a
                generator is given).
            generator: a ``torch.Generator`` on x's device; None uses the global generator.
        """
        _check_budget(n0=n0, n=n, alpha=alpha, batch_size=batch_size)
        rule = FixedRule(Budget(sigma=self.sigma, alpha=alpha, n=n))
        out = self._decide(x, rule, n0=n0, label=0, batch_size=batch_size, generator=generator)
        return Certificate(out.prediction, out.radius, out.count, out.p_lower, n0, n)

    def certify_sequential(
        self,
        x: torch.Tensor,
        plan: SequentialPlan,
        *,
        label: int | None = None,
        n0: int | None = None,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> SequentialCertificate:
        """SEQ-CERT (docs/sequential.md): certify g at x on the plan's radii grid, stopping as soon as decided.

        The tested class c is ``label`` (give ``label``, no ``n0``: certified accuracy, X_i = 1 iff
        f(x + sigma eps_i) = label) or the argmax of ``n0`` separate noisy copies (give ``n0``: deployment,
        as CERTIFY; the selection copies are never reused in the test). Fresh copies are then drawn in
        batches of up to ``batch_size`` (possibly past a check time, never past ``plan.n_max``) and
        decided at each check time in order, as if drawn check time by check time.

        Guarantee (per point, over the noise drawn here), for every grid radius r_k with
        p_k = Phi(r_k / sigma): if the smoothed probability p_c = P(f(x + sigma eps) = c) is < p_k,
        then P(r_k is reported certified) <= plan.alpha, whatever the stopping time
        (alpha / 5 from Ville's inequality on a mixture e-process, 0.8 alpha from one Clopper-Pearson
        look at n_max). Because certified radii are nested, this is also P(the reported radius exceeds
        the true radius sigma * PhiInv(p_c)) <= alpha, the guarantee of CERTIFY restricted to the grid.
        A certified r_k >= 0 means p_c >= p_k >= 1/2, so g(x) = c and g(x + delta) = c for every
        ||delta||_2 < r_k (r = 0: g(x) = c). The radius is a grid value, a floor of the exact radius.

        Noise comes from ``generator`` in the same fixed-size blocks as :meth:`certify` (n0 copies, then
        a stream of n_max), so the test sees a prefix of the copies fixed-n CERTIFY with n = n_max
        would see, and the result does not depend on ``batch_size``.

        Args:
            x: one image (C, H, W) in [0,1], on the device the base classifier runs on.
            plan: boundaries from :func:`ddsx.smoothing.sequential.sequential_plan` for this sigma.
            label: the class to test (certified accuracy mode).
            n0: noisy copies for selecting the candidate class (deployment mode).
            batch_size: noisy copies per forward pass at most (speed only).
            generator: a ``torch.Generator`` on x's device; None uses the global generator.
        """
        if (label is None) == (n0 is None):
            raise ValueError("give exactly one of label (test the true label) or n0 (select a candidate)")
        _check_budget(n0=1 if n0 is None else n0, n=plan.n_max, alpha=plan.alpha, batch_size=batch_size)
        if plan.sigma != self.sigma:
            raise ValueError(
                f"the plan is for sigma = {plan.sigma}, this classifier is smoothed at {self.sigma}"
            )
        if label is not None and (
            not isinstance(label, numbers.Integral) or not 0 <= label < self.num_classes
        ):
            raise ValueError(f"label must be a class index in [0, {self.num_classes}), got {label!r}")
        selection = {"n0": 0, "label": int(label)} if label is not None else {"n0": int(n0), "label": 0}
        out = self._decide(x, PlanRule(plan), batch_size=batch_size, generator=generator, **selection)
        return SequentialCertificate(
            prediction=out.prediction,
            radius=out.radius,
            count=out.count,
            samples=out.samples,
            n0=0 if n0 is None else int(n0),
            certified=out.certified,
            certified_at=out.certified_at,
        )

    def predict(
        self,
        x: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int,
        generator: torch.Generator | None = None,
    ) -> int:
        """Monte Carlo algorithm PREDICT for g at x.

        With probability at least 1 - alpha over the noise drawn here, the returned class equals
        g(x) (or the method abstains, returning ABSTAIN). It abstains unless the two-sided
        binomial test of the top count against the runner-up at p = 1/2 has p-value <= alpha.

        Args: as :meth:`certify`, without ``n0``.
        """
        _check_budget(n0=1, n=n, alpha=alpha, batch_size=batch_size)
        counts = self.sample_counts(x, n, batch_size, generator)
        top = torch.topk(counts, 2)
        count_1, count_2 = int(top.values[0]), int(top.values[1])
        if top_two_p_value(count_1, count_2) > alpha:
            return ABSTAIN
        return int(top.indices[0])

    def sample_counts(
        self, x: torch.Tensor, num: int, batch_size: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """How often f labels each class on ``num`` noisy copies x + sigma * eps: int64 (K,) on CPU.

        Noise for all ``num`` copies comes from ``generator`` in fixed-size blocks, so the counts
        do not depend on ``batch_size`` (up to the base classifier's own batch-size numerics).
        """
        if x.dim() < 1:
            raise ValueError(f"x must be one example (C, H, W), got shape {tuple(x.shape)}")
        _put_in_eval_mode(self.base_classifier)
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=x.device)
        with torch.inference_mode():
            for noise in gaussian_batches(
                x.shape, num, batch_size, generator=generator, device=x.device, dtype=x.dtype
            ):
                # Counted on the device: no host sync until the caller reads the counts.
                counts += torch.bincount(self._classify(x, noise), minlength=self.num_classes)
        return counts.cpu()

    def _decide(
        self,
        x: torch.Tensor,
        rule: Rule,
        *,
        n0: int,
        label: int,
        batch_size: int,
        generator: torch.Generator | None,
    ) -> Outcome:
        """One example through the certification loop that ddsx-certify runs (``ddsx.smoothing.loop``)."""
        if x.dim() < 1:
            raise ValueError(f"x must be one example (C, H, W), got shape {tuple(x.shape)}")
        _put_in_eval_mode(self.base_classifier)
        loop = CertifyLoop(
            rule,
            lambda noisy, needed, _denoiser_noise: self._labels(noisy)[None],
            num_targets=1,
            num_classes=self.num_classes,
            batch_size=batch_size,
            sigma=self.sigma,
            least_sampled_first=False,
        )
        example = Example(0, 0, x, label, [0], rule=rule, n0=n0, generator=generator)
        with torch.inference_mode():
            [decided] = loop.run([example])
        return decided.outcome(0)

    def _classify(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Labels f(x + sigma * noise), (b,) on x's device; overwrites ``noise``."""
        return self._labels(noise.mul_(self.sigma).add_(x))  # x broadcasts, never copied b times

    def _labels(self, noisy: torch.Tensor) -> torch.Tensor:
        """Labels f(noisy), (b,) on noisy's device."""
        with autocast(noisy.device, self.autocast_dtype):
            logits = self.base_classifier(noisy)
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"base classifier must return logits (N, {self.num_classes}), got {tuple(logits.shape)}"
            )
        return logits.argmax(dim=1)


def _put_in_eval_mode(base_classifier: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """A certificate must not depend on batch statistics, nor change them: any module of the base
    classifier left in training mode (batch norm, dropout) is put in eval mode, with a logged line."""
    if not isinstance(base_classifier, torch.nn.Module):
        return
    training = [
        name or type(base_classifier).__name__ for name, m in base_classifier.named_modules() if m.training
    ]
    if training:
        get_logger(__name__).warning(
            "Smooth: the base classifier had %d module(s) in training mode (%s); put in eval mode, as "
            "certification requires",
            len(training),
            ", ".join(training[:3]) + (", ..." if len(training) > 3 else ""),
        )
        base_classifier.eval()


def _check_budget(*, n0: int, n: int, alpha: float, batch_size: int) -> None:
    for name, value in (("n0", n0), ("n", n), ("batch_size", batch_size)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
