"""Statistics with the training run as the unit: random-effects pooling, Welch's test, Holm's correction.

A per-seed paired test (McNemar, bootstrap; ddsx.report.paired) is conditional on one trained network.
Across training seeds the paired difference itself varies, so the evidence for "method A certifies
more than B" is the pooled difference over seeds, with the between-seed variance tau^2 in its error:

- DerSimonian-Laird: per seed k an estimate y_k with within-seed variance v_k; fixed-effect weights
  w_k = 1 / v_k give Cochran's Q = sum w_k (y_k - y_fe)^2 on k - 1 degrees of freedom, and the moment
  estimate tau^2 = max(0, (Q - (k - 1)) / (sum w - sum w^2 / sum w)). The pooled estimate mu uses the
  random-effects weights w*_k = 1 / (v_k + tau^2); I^2 = max(0, (Q - (k - 1)) / Q).
- Hartung-Knapp (Sidik-Jonkman): with few seeds, the plain DL standard error sqrt(1 / sum w*) and a
  normal reference undercover, because tau^2 is itself poorly estimated. HK replaces the variance with
  q / sum w*, q = sum w*_k (y_k - mu)^2 / (k - 1) (not truncated at 1), and uses t with k - 1 degrees
  of freedom.
- REML (optional): tau^2 as the restricted maximum-likelihood fixed point instead of the moment estimate.
- Welch's t-test of two sets of per-run values (the second line: unpaired, no within-seed variances).
- Holm's step-down correction over a family of p-values; the family size is part of the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class Pooled:
    """A random-effects pooling of k per-seed estimates."""

    estimate: float  # the pooled mean mu (random-effects weights)
    se: float  # its standard error: Hartung-Knapp's unless hartung_knapp is False (plain DL)
    low: float  # confidence interval of mu at ``confidence``
    high: float
    p_value: float  # for ``alternative`` against mu = 0
    df: float  # k - 1 for Hartung-Knapp (t); inf for plain DL (normal)
    tau2: float  # between-seed variance
    q: float  # Cochran's Q (fixed-effect weights)
    q_p_value: float  # P(chi2_{k-1} >= Q): the test of no heterogeneity
    i2: float  # share of the variation between seeds that is heterogeneity, in [0, 1]
    k: int
    confidence: float
    alternative: str
    hartung_knapp: bool
    tau2_method: str


@dataclass(frozen=True)
class Welch:
    """Welch's unequal-variance t-test of mean(a) - mean(b) over per-run values."""

    difference: float
    se: float
    t: float
    df: float
    p_value: float
    low: float
    high: float
    confidence: float
    alternative: str


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


# scipy.special's distribution functions, not scipy.stats' objects: a frozen stats.t costs milliseconds
# to build, which the coverage simulations (thousands of poolings) feel.
def _cdf(x: float, df: float) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom; the standard normal where df is inf."""
    return float(special.ndtr(x) if math.isinf(df) else special.stdtr(df, x))


def _quantile(q: float, df: float) -> float:
    """The inverse of :func:`_cdf`."""
    return float(special.ndtri(q) if math.isinf(df) else special.stdtrit(df, q))


def _p_value(statistic: float, df: float, alternative: str) -> float:
    """p of ``statistic`` under t with ``df`` degrees of freedom (normal where inf), for ``alternative``."""
    if alternative == "greater":
        return _cdf(-statistic, df)
    if alternative == "less":
        return _cdf(statistic, df)
    return min(1.0, 2.0 * _cdf(-abs(statistic), df))


def cochran_q(estimates: np.ndarray, variances: np.ndarray) -> float:
    """Cochran's Q: the fixed-effect weighted sum of squares about the fixed-effect mean."""
    weights = 1.0 / variances
    mean = float(np.sum(weights * estimates) / np.sum(weights))
    return float(np.sum(weights * (estimates - mean) ** 2))


def dersimonian_laird_tau2(estimates: np.ndarray, variances: np.ndarray) -> float:
    """The DerSimonian-Laird moment estimate of the between-seed variance (truncated at 0)."""
    weights = 1.0 / variances
    denominator = float(np.sum(weights) - np.sum(weights**2) / np.sum(weights))
    return max(0.0, (cochran_q(estimates, variances) - (len(estimates) - 1)) / denominator)


def reml_tau2(
    estimates: np.ndarray, variances: np.ndarray, tolerance: float = 1e-12, max_iter: int = 1000
) -> float:
    """The REML estimate of tau^2: the fixed point of tau^2 = sum w*^2 ((y - mu)^2 - v) / sum w*^2
    + 1 / sum w*, with w* = 1 / (v + tau^2), started at the DL estimate and kept >= 0."""
    tau2 = dersimonian_laird_tau2(estimates, variances)
    for _ in range(max_iter):
        weights = 1.0 / (variances + tau2)
        mean = np.sum(weights * estimates) / np.sum(weights)
        update = np.sum(weights**2 * ((estimates - mean) ** 2 - variances)) / np.sum(weights**2)
        update = max(0.0, float(update + 1.0 / np.sum(weights)))
        if abs(update - tau2) < tolerance:
            return update
        tau2 = update
    raise ArithmeticError(f"REML tau^2 did not converge in {max_iter} iterations")


def random_effects(
    estimates: Sequence[float],
    variances: Sequence[float],
    confidence: float = 0.95,
    alternative: str = "two-sided",
    hartung_knapp: bool = True,
    tau2_method: str = "DL",
) -> Pooled:
    """Pool per-seed ``estimates`` with within-seed ``variances`` (random effects; see the module doc).

    ``alternative``: "greater" tests H1: mu > 0, "less" H1: mu < 0. Needs k >= 2 and every variance > 0
    (a seed with variance 0 would take all the fixed-effect weight; the caller decides what to show).
    """
    _check_alternative(alternative)
    _check_confidence(confidence)
    y = np.asarray(estimates, dtype=np.float64)
    v = np.asarray(variances, dtype=np.float64)
    if y.shape != v.shape or y.ndim != 1:
        raise ValueError(f"estimates and variances must be two lists of one length, got {y.shape}, {v.shape}")
    k = len(y)
    if k < 2:
        raise ValueError(f"random-effects pooling needs at least 2 seeds, got {k}")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(v)) and np.all(v > 0)):
        raise ValueError("every within-seed variance must be finite and > 0, every estimate finite")
    if tau2_method == "DL":
        tau2 = dersimonian_laird_tau2(y, v)
    elif tau2_method == "REML":
        tau2 = reml_tau2(y, v)
    else:
        raise ValueError(f"tau2_method must be DL or REML, got {tau2_method!r}")
    q = cochran_q(y, v)
    weights = 1.0 / (v + tau2)
    mu = float(np.sum(weights * y) / np.sum(weights))
    if hartung_knapp:
        # The weighted residual variance of the estimates about mu, on k - 1 degrees of freedom.
        scale = float(np.sum(weights * (y - mu) ** 2) / (k - 1))
        se = math.sqrt(scale / float(np.sum(weights)))
        df = float(k - 1)
    else:
        se = math.sqrt(1.0 / float(np.sum(weights)))
        df = math.inf
    quantile = _quantile(0.5 + confidence / 2.0, df)
    if se > 0:
        p = _p_value(mu / se, df, alternative)
    else:  # every seed on one value (HK's residual variance 0): no spread to test against
        p = 1.0 if mu == 0 else float(alternative == "less" if mu > 0 else alternative == "greater")
    return Pooled(
        estimate=mu,
        se=se,
        low=mu - quantile * se,
        high=mu + quantile * se,
        p_value=p,
        df=df,
        tau2=tau2,
        q=q,
        q_p_value=float(special.chdtrc(k - 1, q)),
        i2=max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0,
        k=k,
        confidence=confidence,
        alternative=alternative,
        hartung_knapp=hartung_knapp,
        tau2_method=tau2_method,
    )


def welch(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95, alternative: str = "two-sided"
) -> Welch:
    """Welch's t-test of mean(a) - mean(b): t = (mean a - mean b) / sqrt(s_a^2 / n_a + s_b^2 / n_b) with
    the Welch-Satterthwaite degrees of freedom. Needs two values per side and a nonzero spread."""
    _check_alternative(alternative)
    _check_confidence(confidence)
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"Welch's test needs at least 2 values per side, got {len(x)} and {len(y)}")
    share_a, share_b = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    if share_a + share_b == 0:
        raise ValueError("Welch's test needs some spread: every value of both sides is the same")
    se = math.sqrt(share_a + share_b)
    df = (share_a + share_b) ** 2 / (share_a**2 / (len(x) - 1) + share_b**2 / (len(y) - 1))
    difference = float(x.mean() - y.mean())
    quantile = _quantile(0.5 + confidence / 2.0, df)
    return Welch(
        difference=difference,
        se=se,
        t=difference / se,
        df=float(df),
        p_value=_p_value(difference / se, df, alternative),
        low=difference - quantile * se,
        high=difference + quantile * se,
        confidence=confidence,
        alternative=alternative,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given; the family is every p-value passed.

    Sorted ascending, the i-th smallest (i from 0) is multiplied by m - i, then the running maximum
    keeps the adjusted values monotone, capped at 1. Rejecting where adjusted p < level controls the
    family-wise error rate at level over all m tests.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("Holm's correction needs a list of p-values in [0, 1]")
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, sample sd, low, high): the t interval of the mean over two or more values."""
    _check_confidence(confidence)
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        raise ValueError(f"a t interval needs at least 2 values, got {len(x)}")
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    half = _quantile(0.5 + confidence / 2.0, len(x) - 1) * sd / math.sqrt(len(x))
    return mean, sd, mean - half, mean + half
