"""Run-level statistics (ddsx.report.run_level) against known answers.

- DerSimonian-Laird and REML on the BCG vaccine trials (Colditz et al. 1994; metafor's dat.bcg), whose
  published results are quoted below; Hartung-Knapp against an independent computation (weighted least
  squares of the estimates on an intercept, by numpy's lstsq, with scipy's t distribution).
- Holm against a hand-worked family; Welch against scipy.stats.ttest_ind(equal_var=False).
- Simulations with known variance components: tau^2 is recovered on average, and Hartung-Knapp covers
  near the nominal 95 % at k = 3, 5, 10 seeds where plain DL undercovers (Monte Carlo limits stated).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ddsx.report.run_level import holm, mean_interval, random_effects, welch

# BCG trials: vaccinated TB+, TB-, unvaccinated TB+, TB- (Colditz et al. 1994, Table 1).
BCG = np.array(
    [
        [4, 119, 11, 128],  # Aronson 1948
        [6, 300, 29, 274],  # Ferguson & Simes 1949
        [3, 228, 11, 209],  # Rosenthal et al 1960
        [62, 13536, 248, 12619],  # Hart & Sutherland 1977
        [33, 5036, 47, 5761],  # Frimodt-Moller et al 1973
        [180, 1361, 372, 1079],  # Stein & Aronson 1953
        [8, 2537, 10, 619],  # Vandiviere et al 1973
        [505, 87886, 499, 87892],  # TPT Madras 1980
        [29, 7470, 45, 7232],  # Coetzee & Berjak 1968
        [17, 1699, 65, 1600],  # Rosenthal et al 1961
        [186, 50448, 141, 27197],  # Comstock et al 1974
        [5, 2493, 3, 2338],  # Comstock & Webster 1969
        [27, 16886, 29, 17825],  # Comstock et al 1976
    ],
    dtype=np.float64,
)


def bcg_log_risk_ratios() -> tuple[np.ndarray, np.ndarray]:
    """yi = log risk ratio, vi = its large-sample variance 1/a - 1/(a+b) + 1/c - 1/(c+d)."""
    a, b, c, d = BCG.T
    yi = np.log(a / (a + b)) - np.log(c / (c + d))
    vi = 1 / a - 1 / (a + b) + 1 / c - 1 / (c + d)
    return yi, vi


def test_dersimonian_laird_on_the_bcg_trials_matches_the_published_results() -> None:
    # Published (metafor, rma(measure="RR", method="DL")): tau^2 = 0.3088, Q(df = 12) = 152.2330,
    # I^2 = 92.12 %, estimate -0.7141, se 0.1787, 95 % CI [-1.0644, -0.3638].
    pooled = random_effects(*bcg_log_risk_ratios(), hartung_knapp=False)
    assert pooled.tau2 == pytest.approx(0.3088, abs=5e-5)
    assert pooled.q == pytest.approx(152.2330, abs=5e-4)
    assert pooled.i2 == pytest.approx(0.9212, abs=5e-5)
    assert pooled.estimate == pytest.approx(-0.7141, abs=5e-5)
    assert pooled.se == pytest.approx(0.1787, abs=5e-5)
    assert (pooled.low, pooled.high) == pytest.approx((-1.0644, -0.3638), abs=5e-5)
    assert pooled.k == 13 and math.isinf(pooled.df)


def test_reml_on_the_bcg_trials_matches_the_published_results() -> None:
    # Published (metafor's default REML): tau^2 = 0.3132, estimate -0.7145, se 0.1798; with
    # test="knha": se 0.1808, t(12) = -3.9522, p = 0.0019, CI [-1.1084, -0.3206].
    yi, vi = bcg_log_risk_ratios()
    plain = random_effects(yi, vi, hartung_knapp=False, tau2_method="REML")
    assert plain.tau2 == pytest.approx(0.3132, abs=5e-5)
    assert (plain.estimate, plain.se) == pytest.approx((-0.7145, 0.1798), abs=5e-5)
    hk = random_effects(yi, vi, tau2_method="REML")
    assert hk.se == pytest.approx(0.1808, abs=5e-5)
    assert hk.estimate / hk.se == pytest.approx(-3.9522, abs=5e-4)
    assert hk.p_value == pytest.approx(0.0019, abs=5e-5)
    assert (hk.low, hk.high) == pytest.approx((-1.1084, -0.3206), abs=5e-5)


def _hartung_knapp_by_least_squares(yi: np.ndarray, vi: np.ndarray, tau2: float) -> tuple[float, float]:
    """HK's mean and se as a weighted regression on an intercept: scale the rows by sqrt(w), solve by
    lstsq, and take the usual OLS standard error (residual sum of squares over k - 1 degrees of freedom)."""
    root = np.sqrt(1.0 / (vi + tau2))
    design = root[:, None]  # the intercept column, scaled
    (mean,), residual, _, _ = np.linalg.lstsq(design, root * yi, rcond=None)
    scale = float(residual[0]) / (len(yi) - 1)
    se = math.sqrt(scale * float(np.linalg.inv(design.T @ design)[0, 0]))
    return float(mean), se


def test_hartung_knapp_on_the_bcg_trials_matches_an_independent_computation() -> None:
    yi, vi = bcg_log_risk_ratios()
    pooled = random_effects(yi, vi)
    dl = random_effects(yi, vi, hartung_knapp=False)
    mean, se = _hartung_knapp_by_least_squares(yi, vi, dl.tau2)
    assert pooled.estimate == pytest.approx(mean, rel=1e-10) and pooled.se == pytest.approx(se, rel=1e-10)
    assert pooled.se == pytest.approx(0.1807, abs=5e-5)  # differs from DL's 0.1787
    t12 = stats.t(df=12)
    assert pooled.df == 12
    assert pooled.p_value == pytest.approx(2 * t12.cdf(-abs(mean / se)), rel=1e-10)
    assert (pooled.low, pooled.high) == pytest.approx(
        (mean - t12.ppf(0.975) * se, mean + t12.ppf(0.975) * se)
    )
    # One-sided: the effect is negative, so "less" is half the two-sided p and "greater" its complement.
    less = random_effects(yi, vi, alternative="less")
    greater = random_effects(yi, vi, alternative="greater")
    assert less.p_value == pytest.approx(pooled.p_value / 2, rel=1e-10)
    assert greater.p_value == pytest.approx(1 - pooled.p_value / 2, rel=1e-10)
    assert pooled.q_p_value == pytest.approx(stats.chi2(df=12).sf(152.2330), rel=1e-4)


def test_homogeneous_estimates_give_tau2_zero_and_the_fixed_effect_mean() -> None:
    # Q = 0.5 < k - 1 = 2: tau^2 truncated at 0, the weights are 1 / v, I^2 = 0.
    yi, vi = np.array([0.1, 0.2, 0.15]), np.array([0.01, 0.04, 0.02])
    pooled = random_effects(yi, vi, hartung_knapp=False)
    weights = 1 / vi
    assert pooled.q == pytest.approx(
        float(np.sum(weights * (yi - np.sum(weights * yi) / np.sum(weights)) ** 2))
    )
    assert pooled.tau2 == 0.0 and pooled.i2 == 0.0
    assert pooled.estimate == pytest.approx(float(np.sum(weights * yi) / np.sum(weights)))
    assert pooled.se == pytest.approx(math.sqrt(1 / np.sum(weights)))


def test_pooling_refuses_one_seed_and_a_zero_variance() -> None:
    with pytest.raises(ValueError, match="at least 2 seeds"):
        random_effects([0.1], [0.01])
    with pytest.raises(ValueError, match="> 0"):
        random_effects([0.1, 0.2], [0.01, 0.0])
    with pytest.raises(ValueError, match="alternative"):
        random_effects([0.1, 0.2], [0.01, 0.01], alternative="bigger")


def test_holm_matches_a_hand_worked_family() -> None:
    # m = 4. Sorted: 0.005 * 4 = 0.02; 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> max(0.06,
    # 0.04) = 0.06 (step-down monotone). In the given order: 0.03, 0.06, 0.06, 0.02.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Capped at 1; a family of one is unchanged.
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([0.2]) == [0.2]
    assert holm([]) == []
    with pytest.raises(ValueError):
        holm([0.1, float("nan")])


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_welch_matches_scipy(alternative: str) -> None:
    a = [0.84, 0.82, 0.86, 0.85, 0.80]
    b = [0.81, 0.79, 0.84, 0.70]
    ours = welch(a, b, alternative=alternative)
    theirs = stats.ttest_ind(a, b, equal_var=False, alternative=alternative)
    assert ours.t == pytest.approx(theirs.statistic, rel=1e-12)
    assert ours.df == pytest.approx(theirs.df, rel=1e-12)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-10)
    if alternative == "two-sided":
        interval = theirs.confidence_interval(0.95)
        assert (ours.low, ours.high) == pytest.approx((interval.low, interval.high), rel=1e-10)


def test_mean_interval_is_the_t_interval_over_seeds() -> None:
    mean, sd, low, high = mean_interval([0.80, 0.82, 0.87])
    half = stats.t(df=2).ppf(0.975) * np.std([0.80, 0.82, 0.87], ddof=1) / math.sqrt(3)
    assert (mean, sd) == pytest.approx((0.83, np.std([0.80, 0.82, 0.87], ddof=1)))
    assert (low, high) == pytest.approx((0.83 - half, 0.83 + half))


def _simulate(k: int, tau: float, within_sd: np.ndarray, replicates: int, seed: int) -> np.ndarray:
    """replicates x k per-seed estimates: true mean 0, seed effects N(0, tau^2), noise N(0, within_sd^2)."""
    generator = np.random.default_rng(seed)
    return (
        generator.normal(0.0, tau, (replicates, k)) + generator.normal(0.0, 1.0, (replicates, k)) * within_sd
    )


def test_dersimonian_laird_tau2_averages_near_the_true_between_seed_variance() -> None:
    # k = 10 seeds, tau = 0.02, within sd 0.01 (the scale of certified-accuracy differences over 500
    # digits). With equal within variances the untruncated estimate is unbiased; truncation at 0 happens
    # when chi2_9 < 1.8 (probability 0.6 %), a bias below 1e-6. The sd of one estimate is about
    # (tau^2 + s^2) * sqrt(2 / 9) = 2.4e-4, so the mean of 4000 has a Monte Carlo sd of 3.7e-6: the
    # tolerance 2e-5 is over 5 of them (4 % of tau^2 = 4e-4).
    k, tau, replicates = 10, 0.02, 4000
    within = np.full(k, 0.01)
    draws = _simulate(k, tau, within, replicates, seed=1)
    estimates = [random_effects(row, within**2).tau2 for row in draws]
    assert np.mean(estimates) == pytest.approx(tau**2, abs=2e-5)
    # With no between-seed variance the estimate sits near 0, far below 4e-4.
    nulls = [random_effects(row, within**2).tau2 for row in _simulate(k, 0.0, within, 1000, seed=2)]
    assert np.mean(nulls) < 4e-5


@pytest.mark.parametrize("k", [3, 5, 10])
def test_hartung_knapp_covers_near_nominal_where_plain_dl_undercovers(k: int) -> None:
    # Within-seed sds 0.008 to 0.012 (500 digits at accuracies 0.6 to 0.9 give 0.009 to 0.011 for a
    # paired difference) and tau = 0.02, 4000 replicates per k. Monte Carlo limit: the sd of a coverage
    # estimate near 0.95 is sqrt(0.95 * 0.05 / 4000) = 0.0034, so HK must lie within 0.015 of 0.95
    # (over 4 sd). Plain DL (normal reference, 1 / sum w* variance) must fall below 0.93 (it covers
    # about 0.82 at k = 3, 0.89 at 5 and 0.92 at 10 here). Known limit, not tested: with within sds
    # 4x apart (0.005 to 0.02) HK itself covers only about 0.90 at k = 3 and 0.93 at k = 5.
    replicates = 4000
    within = np.linspace(0.008, 0.012, k)
    draws = _simulate(k, 0.02, within, replicates, seed=10 + k)
    hk = [random_effects(row, within**2) for row in draws]
    dl = [random_effects(row, within**2, hartung_knapp=False) for row in draws]
    hk_cover = np.mean([p.low <= 0.0 <= p.high for p in hk])
    dl_cover = np.mean([p.low <= 0.0 <= p.high for p in dl])
    assert abs(hk_cover - 0.95) < 0.015, hk_cover
    assert dl_cover < 0.93, dl_cover
    # The p-value is the interval's test: under the true null, rejections at 0.05 are 1 - coverage.
    assert np.mean([p.p_value < 0.05 for p in hk]) == pytest.approx(1 - hk_cover, abs=1e-9)
