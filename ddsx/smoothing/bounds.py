"""The statistics behind CERTIFY and PREDICT (Cohen et al. 2019), as plain functions of counts."""

from __future__ import annotations

from scipy.stats import beta, binomtest, norm


def lower_confidence_bound(count: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on p from ``count`` successes in ``n`` trials.

    Equals ``Beta.ppf(alpha, count, n - count + 1)`` (statsmodels' ``proportion_confint(count, n,
    2 * alpha, "beta")[0]``, which Cohen et al.'s code uses); 0 when ``count == 0``, where that
    quantile is undefined but the bound is trivially 0.
    """
    if not 0 <= count <= n:
        raise ValueError(f"count must be in [0, n={n}], got {count}")
    if count == 0:
        return 0.0
    return float(beta.ppf(alpha, count, n - count + 1))


def certified_radius(p_lower: float, sigma: float) -> float:
    """l2 radius ``sigma * PhiInv(p_lower)`` within which the smoothed classifier cannot change."""
    return float(sigma * norm.ppf(p_lower))


def top_two_p_value(count_1: int, count_2: int) -> float:
    """Two-sided binomial-test p-value of ``count_1`` successes in ``count_1 + count_2`` at p = 1/2."""
    total = count_1 + count_2
    if total == 0:
        return 1.0
    return float(binomtest(count_1, total, 0.5).pvalue)
