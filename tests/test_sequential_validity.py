"""SEQ-CERT validity (docs/sequential.md section 5): exact DP, Monte Carlo, negative control, power.

Bernoulli streams stand in for the classifier: X_i = 1 with probability p_A. The least favourable
null for radius r_k is p_A = p_k = Phi(r_k / sigma), where false certification must be <= alpha.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, norm

from ddsx.smoothing.sequential import SequentialPlan, SequentialTest, decide, sequential_plan
from ddsx.smoothing.sequential_boundaries import VILLE_SHARE, check_against_fixed_cp

# The grid and budget the engine ships (ddsx/certification/settings.py; docs/sequential.md section 5, batch 100).
SHIPPED_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
SHIPPED_ALPHA, SHIPPED_N_MAX, SHIPPED_CHECK_EVERY = 1e-3, 100_000, 100
SIGMAS = (0.25, 0.5, 1.0)


@pytest.fixture(scope="module")
def shipped_plans(tmp_path_factory: pytest.TempPathFactory) -> dict[float, SequentialPlan]:
    cache = tmp_path_factory.mktemp("plans")
    return {
        s: sequential_plan(
            s, SHIPPED_RADII, SHIPPED_ALPHA, SHIPPED_N_MAX, SHIPPED_CHECK_EVERY, cache_dir=cache
        )
        for s in SIGMAS
    }


def certification_probability(plan: SequentialPlan, k: int, p: float, floor: float = 1e-18) -> float:
    """P(r_k is certified) for a Binomial stream with success probability p, by exact DP over (t, A).

    The distribution of the count over streams where r_k is still undecided is carried between checks
    (convolution with the Binomial(increment, p) pmf), restricted to the counts strictly between the
    give-up and certify boundaries. Tails below ``floor`` at the window's edges are cut off and counted
    as certified, so the returned value is an upper bound (exact up to that added mass).
    """
    dist = np.ones(1)  # P(A = lo + j, undecided)
    lo = 0
    certified = 0.0
    previous = 0
    for i, t in enumerate(plan.check_times):
        step = int(t - previous)
        previous = int(t)
        dist = np.convolve(dist, binom.pmf(np.arange(step + 1), step, p))
        counts = lo + np.arange(len(dist))
        cert = counts >= plan.certify_at[i, k]
        certified += dist[cert].sum()
        keep = ~cert & (counts > plan.give_up_at[i, k])
        if not keep.any():
            return float(certified)
        first, last = np.flatnonzero(keep)[[0, -1]]
        dist, lo = dist[first : last + 1], lo + first
        # Cut negligible tails (conservatively counted as certified).
        mass = np.cumsum(dist)
        start = int(np.searchsorted(mass, floor, side="right"))
        tail = np.cumsum(dist[::-1])
        stop = len(dist) - int(np.searchsorted(tail, floor, side="right"))
        certified += dist[:start].sum() + dist[stop:].sum()
        dist, lo = dist[start:stop], lo + start
        if len(dist) == 0:
            return float(certified)
    return float(certified)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_exact_false_certification_is_at_most_alpha_for_every_shipped_radius(
    shipped_plans: dict[float, SequentialPlan], sigma: float
) -> None:
    plan = shipped_plans[sigma]
    possible = 0
    for k, p in enumerate(plan.thresholds):
        prob = certification_probability(plan, k, p)
        assert prob <= plan.alpha, f"r = {plan.radii[k]}: P(false certify) = {prob}"
        if plan.final_at[k] <= plan.n_max:
            possible += 1
            # The bound is nearly used up (docs/sequential.md section 5: about 8e-4), so the test is not trivially safe.
            assert prob > 0.5 * plan.alpha
    assert possible >= 4


def test_dp_matches_a_closed_form_on_a_one_look_plan() -> None:
    # One check at n: certify iff A >= c; P = binom.sf(c - 1, n, p) exactly.
    n, c, p = 1000, 540, 0.5
    plan = SequentialPlan(
        1.0, (0.0,), 0.01, n, n, np.array([n]), np.array([[c]]), np.array([[c - 1]]), np.array([c])
    )
    assert certification_probability(plan, 0, p) == pytest.approx(binom.sf(c - 1, n, p), rel=1e-9)


def test_final_look_is_clopper_pearson_at_four_fifths_of_alpha(
    shipped_plans: dict[float, SequentialPlan],
) -> None:
    for plan in shipped_plans.values():
        level = (1 - VILLE_SHARE) * plan.alpha
        for k, p in enumerate(plan.thresholds):
            c = plan.final_at[k]
            if c > plan.n_max:
                assert binom.sf(plan.n_max - 1, plan.n_max, p) > level  # even all hits cannot certify
                continue
            assert binom.sf(c - 1, plan.n_max, p) <= level < binom.sf(c - 2, plan.n_max, p)
            assert plan.certify_at[-1, k] == min(c, plan.certify_at[-1, k])


def test_every_sequential_certificate_is_a_fixed_n_cp_certificate(
    shipped_plans: dict[float, SequentialPlan],
) -> None:
    for plan in shipped_plans.values():
        check_against_fixed_cp(plan)  # raises on any boundary point with binom.sf(A - 1, t, p_k) > alpha
        t = plan.check_times[:, None]
        reachable = plan.certify_at <= t
        assert reachable.sum() > 1000  # the property is checked on many boundary points
        sf = binom.sf(plan.certify_at - 1, np.broadcast_to(t, plan.certify_at.shape), plan.thresholds[None])
        assert np.all(sf[reachable] <= plan.alpha)


def test_the_fixed_cp_check_rejects_a_weaker_boundary(shipped_plans: dict[float, SequentialPlan]) -> None:
    plan = shipped_plans[0.5]
    weaker = plan.certify_at.copy()
    weaker[10:, 0] -= 40  # r = 0 boundary lowered: no longer a CP certificate at alpha
    bad = SequentialPlan(
        plan.sigma, plan.radii, plan.alpha, plan.n_max, plan.check_every, plan.check_times,
        np.maximum.accumulate(weaker, axis=1), np.minimum(plan.give_up_at, weaker - 1), plan.final_at,
    )  # fmt: skip
    with pytest.raises(ValueError, match="Clopper-Pearson"):
        check_against_fixed_cp(bad)


# ---- Monte Carlo through the production decision code ----------------------------------------------


def simulate(plan: SequentialPlan, p: float, streams: int, rng: np.random.Generator):
    """Run ``streams`` Binomial streams through :func:`decide`; (certified (N, K), samples (N,), hits (N,))."""
    k = len(plan.radii)
    hits = np.zeros(streams, dtype=np.int64)
    samples = np.zeros(streams, dtype=np.int64)
    certified = np.zeros((streams, k), dtype=bool)
    abandoned = np.zeros((streams, k), dtype=bool)
    live = np.arange(streams)
    previous = 0
    for i, t in enumerate(plan.check_times):
        hits[live] += rng.binomial(int(t - previous), p, size=len(live))
        previous = int(t)
        samples[live] = t
        c, a = decide(plan, i, hits[live], certified[live], abandoned[live])
        certified[live], abandoned[live] = c, a
        live = live[~(c | a).all(axis=1)]
        if len(live) == 0:
            break
    return certified, samples, hits


MC_ALPHA, MC_N_MAX, MC_CHECK_EVERY, MC_STREAMS = 0.01, 10_000, 50, 50_000
MC_LIMIT = MC_ALPHA * MC_STREAMS + 3 * math.sqrt(MC_ALPHA * (1 - MC_ALPHA) * MC_STREAMS)  # 567
MC_RADII = (0.0, 1.5, 3.0)  # r / sigma at sigma = 1


@pytest.fixture(scope="module")
def mc_plan(tmp_path_factory: pytest.TempPathFactory) -> SequentialPlan:
    return sequential_plan(
        1.0, MC_RADII, MC_ALPHA, MC_N_MAX, MC_CHECK_EVERY, cache_dir=tmp_path_factory.mktemp("mc")
    )


def cp_rechecked_every_batch(plan: SequentialPlan) -> SequentialPlan:
    """The invalid rule: fixed-n Clopper-Pearson at alpha re-checked after every batch, no futility."""
    t = plan.check_times[:, None]
    p = plan.thresholds[None, :]
    # Smallest A with binom.sf(A - 1, t, p) <= alpha, found from the quantile and fixed up by one step.
    c = binom.isf(plan.alpha, t, p).astype(np.int64) + 1
    c = np.where(binom.sf(c - 2, t, p) <= plan.alpha, c - 1, c)
    give_up = np.full_like(c, -1)
    give_up[-1] = c[-1] - 1
    return SequentialPlan(
        plan.sigma, plan.radii, plan.alpha, plan.n_max, plan.check_every, plan.check_times, c, give_up, c[-1]
    )


@pytest.mark.parametrize("k", range(len(MC_RADII)))
def test_monte_carlo_false_certifications_stay_within_alpha(mc_plan: SequentialPlan, k: int) -> None:
    rng = np.random.default_rng(1000 + k)
    certified, _, _ = simulate(mc_plan, mc_plan.thresholds[k], MC_STREAMS, rng)
    false = int(certified[:, k].sum())
    assert false <= MC_LIMIT, f"r/sigma = {MC_RADII[k]}: {false} false certifications of {MC_STREAMS}"
    assert false > 0.2 * MC_ALPHA * MC_STREAMS  # the harness does see certifications near the threshold


@pytest.mark.parametrize("k", range(len(MC_RADII)))
def test_negative_control_cp_rechecked_every_batch_fails_the_same_harness(
    mc_plan: SequentialPlan, k: int
) -> None:
    bad = cp_rechecked_every_batch(mc_plan)
    certified, _, _ = simulate(bad, bad.thresholds[k], MC_STREAMS, np.random.default_rng(2000 + k))
    assert certified[:, k].sum() > MC_LIMIT


def test_vectorised_decisions_equal_the_sequential_test(mc_plan: SequentialPlan) -> None:
    # The harness above runs decide() on many streams; SequentialTest must take the same decisions
    # on each stream, whatever the chunking inside a check interval.
    rng = np.random.default_rng(7)
    streams = 300
    p = rng.choice([0.3, 0.5, 0.75, 0.9332, 0.97, 0.9987, 0.9995, 1.0], streams)
    steps = np.diff(mc_plan.check_times, prepend=0)
    increments = rng.binomial(steps[None, :], p[:, None])  # (N, T) hits per check interval
    running = np.cumsum(increments, axis=1)
    certified = np.zeros((streams, 3), dtype=bool)
    abandoned = np.zeros((streams, 3), dtype=bool)
    stopped_at = np.zeros(streams, dtype=np.int64)  # index of the last check each stream took part in
    for i in range(len(steps)):
        live = np.flatnonzero(~(certified | abandoned).all(axis=1))
        if len(live) == 0:
            break
        certified[live], abandoned[live] = decide(
            mc_plan, i, running[live, i], certified[live], abandoned[live]
        )
        stopped_at[live] = i
    for j in range(streams):
        test = SequentialTest(mc_plan)
        i = 0
        while not test.done:
            need = test.next_chunk()
            assert need == steps[i]
            first = int(rng.integers(1, need + 1))
            h1 = min(int(increments[j, i]), first)
            test.update(h1, first)
            if need > first:
                test.update(int(increments[j, i]) - h1, need - first)
            i += 1
        assert test.certified() == list(certified[j])
        assert test.samples == mc_plan.check_times[stopped_at[j]]
        assert test.hits == running[j, stopped_at[j]]
        assert test.next_chunk() == 0
        radius = test.certified_radius()
        expected = [r for r, c in zip(mc_plan.radii, certified[j], strict=True) if c]
        assert radius == (expected[-1] if expected else None)
    assert certified.any() and (~certified).any()  # both outcomes occur


def test_power_far_from_every_threshold_matches_fixed_n_with_about_1150_samples(
    shipped_plans: dict[float, SequentialPlan],
) -> None:
    # sigma 0.5, p_A 0.9 (true radius 0.64): fixed-n CP at n_max certifies r <= 0.5 almost surely.
    plan = shipped_plans[0.5]
    streams, p = 20_000, 0.9
    rng = np.random.default_rng(3)
    certified, samples, hits = simulate(plan, p, streams, rng)
    # The same streams continued to n_max, certified by fixed-n CP at alpha.
    total = hits + rng.binomial(plan.n_max - samples, p)
    fixed = binom.sf(total[:, None] - 1, plan.n_max, plan.thresholds[None, :]) <= plan.alpha
    assert fixed[:, :3].all() and not fixed[:, 3:].any()
    agree = (certified == fixed).all(axis=1).mean()
    assert agree > 0.999
    assert 1000 < samples.mean() < 1300, samples.mean()


def test_thresholds_up_to_eight_sigma_give_finite_integer_boundaries(tmp_path) -> None:
    radii = tuple(np.linspace(0.0, 8.0, 17))  # r / sigma up to 8 at sigma = 1
    plan = sequential_plan(1.0, radii, 1e-3, 20_000, 100, cache_dir=tmp_path)
    assert np.all(norm.cdf(np.asarray(radii)) == plan.thresholds)
    for array in (plan.certify_at, plan.give_up_at, plan.final_at):
        assert array.dtype == np.int64 and np.isfinite(array).all()
    t = plan.check_times[:, None]
    impossible = plan.final_at > plan.n_max  # p_k too close to 1 for 20,000 samples
    assert impossible.sum() >= 8 and not impossible[:3].any()
    # Radii no count within n_max could certify are dropped: never certifiable, abandoned at once.
    assert np.all(plan.certify_at[:, impossible] > t)
    assert np.all(plan.give_up_at[0, impossible] == plan.check_times[0])
    check_against_fixed_cp(plan)
