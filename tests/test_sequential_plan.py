"""SEQ-CERT plans: nesting, the on-disk cache (a file is data, never trusted), and the stream API."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom

from ddsx.smoothing import sequential_boundaries as plan_module
from ddsx.smoothing.sequential import SequentialPlan, SequentialTest, compute_plan, sequential_plan

RADII = (0.0, 0.25, 0.5, 1.0)
ARGS = dict(sigma=0.5, radii=RADII, alpha=1e-3, n_max=5_000, check_every=100)


def only_file(folder: Path) -> Path:
    files = list(folder.glob("*.npz"))
    assert len(files) == 1
    return files[0]


def assert_same_plan(a: SequentialPlan, b: SequentialPlan) -> None:
    for name in ("check_times", "certify_at", "give_up_at", "final_at"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert (a.sigma, a.radii, a.alpha, a.n_max, a.check_every) == (
        b.sigma,
        b.radii,
        b.alpha,
        b.n_max,
        b.check_every,
    )


@pytest.fixture(scope="module")
def fresh() -> SequentialPlan:
    return compute_plan(**ARGS)


def test_cache_round_trip_loads_without_recomputing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: SequentialPlan
) -> None:
    first = sequential_plan(**ARGS, cache_dir=tmp_path)
    assert_same_plan(first, fresh)
    only_file(tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("recomputed although a valid cache file exists")

    monkeypatch.setattr(plan_module, "compute_plan", forbidden)
    assert_same_plan(sequential_plan(**ARGS, cache_dir=tmp_path), fresh)


def test_default_cache_folder_follows_ddsx_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DDSX_CACHE", str(tmp_path))
    sequential_plan(**ARGS)
    only_file(tmp_path / "sequential")


def corrupt_garbage(path: Path) -> None:
    path.write_bytes(b"not an npz file at all")


def corrupt_lowered_boundary(path: Path) -> None:
    # Same key, right shapes, but the r = 0 boundary lowered below the fixed-n CP certificate.
    with np.load(path) as data:
        arrays = dict(data)
    arrays["certify_at"] = arrays["certify_at"].copy()
    arrays["certify_at"][5:, :] -= 30
    arrays["give_up_at"] = np.minimum(arrays["give_up_at"], arrays["certify_at"] - 1)
    np.savez(path, **arrays)


def corrupt_shape(path: Path) -> None:
    with np.load(path) as data:
        arrays = dict(data)
    arrays["certify_at"] = arrays["certify_at"][:, :2]
    np.savez(path, **arrays)


def corrupt_key(path: Path) -> None:
    # A valid plan for other settings stored under this file name.
    other = compute_plan(**{**ARGS, "alpha": 0.5})
    with np.load(path) as data:
        key = str(data["key"][()])
    np.savez(
        path,
        key=np.array(key.replace('"alpha": "0.001"', '"alpha": "0.5"')),
        check_times=other.check_times,
        certify_at=other.certify_at,
        give_up_at=other.give_up_at,
        final_at=other.final_at,
    )


def corrupt_pickle(path: Path) -> None:
    # An object array needs pickle to load: never allowed.
    with np.load(path) as data:
        arrays = dict(data)
    arrays["final_at"] = np.array([object()] * len(RADII), dtype=object)
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "corrupt", [corrupt_garbage, corrupt_lowered_boundary, corrupt_shape, corrupt_key, corrupt_pickle]
)
def test_a_corrupted_cache_file_is_recomputed_not_trusted(
    tmp_path: Path, fresh: SequentialPlan, corrupt
) -> None:
    sequential_plan(**ARGS, cache_dir=tmp_path)
    path = only_file(tmp_path)
    corrupt(path)
    with pytest.warns(UserWarning, match="ignoring sequential plan cache"):
        plan = sequential_plan(**ARGS, cache_dir=tmp_path)
    assert_same_plan(plan, fresh)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten file is valid again
        assert_same_plan(sequential_plan(**ARGS, cache_dir=tmp_path), fresh)


def test_different_settings_get_different_cache_files(tmp_path: Path) -> None:
    a = sequential_plan(**ARGS, cache_dir=tmp_path)
    b = sequential_plan(**{**ARGS, "alpha": 1e-2}, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    assert np.all(b.certify_at <= a.certify_at) and np.any(b.certify_at < a.certify_at)


def test_nesting_is_enforced_on_non_monotone_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    # Reverse the per-radius Ville boundaries so that smaller radii get larger boundaries: the plan
    # must still certify r_k only when every r_j <= r_k is certified (running max over j <= k).
    original = plan_module.ville_boundaries

    def reversed_boundaries(check_times, z, level):
        return original(check_times, z, level)[:, ::-1]

    monkeypatch.setattr(plan_module, "ville_boundaries", reversed_boundaries)
    plan = compute_plan(**ARGS)
    raw = reversed_boundaries(plan.check_times, np.asarray(RADII) / ARGS["sigma"], 0.2 * ARGS["alpha"])
    assert np.all(np.diff(plan.certify_at, axis=1) >= 0)
    assert np.all(plan.certify_at[:-1] == np.maximum.accumulate(raw[:-1], axis=1))
    assert np.all(np.diff(plan.give_up_at, axis=1) >= 0)


def test_plans_with_broken_invariants_are_rejected(fresh: SequentialPlan) -> None:
    not_nested = fresh.certify_at.copy()
    not_nested[:, 0] = not_nested[:, -1] + 1
    overlapping = fresh.give_up_at.copy()
    overlapping[3, 1] = fresh.certify_at[3, 1]
    for change in (
        {"certify_at": not_nested},
        {"give_up_at": overlapping},
        {"certify_at": fresh.certify_at[:-1]},
        {"check_times": fresh.check_times[::-1]},
        {"radii": RADII[::-1]},
        {"alpha": 0.0},
    ):
        with pytest.raises(ValueError):
            dataclasses.replace(fresh, **change)  # reruns the plan's validation
    with pytest.raises(ValueError):  # arrays are read-only
        fresh.certify_at[0, 0] = 0


def test_sequential_test_rejects_chunks_across_a_check_and_after_the_end(fresh: SequentialPlan) -> None:
    test = SequentialTest(fresh)
    assert test.next_chunk() == 100
    with pytest.raises(ValueError, match="crosses"):
        test.update(50, 101)
    with pytest.raises(ValueError):
        test.update(11, 10)
    test.update(30, 60)
    assert (test.samples, test.hits, test.next_chunk()) == (60, 30, 40)
    test.update(0, 40)  # 30 of 100: far below 1/2, every radius abandoned at the first check
    assert test.done and test.certified() == [False] * 4 and test.certified_radius() is None
    with pytest.raises(RuntimeError):
        test.update(1, 1)


def test_sequential_test_certifies_nested_radii(fresh: SequentialPlan) -> None:
    test = SequentialTest(fresh)
    while not test.done:
        n = test.next_chunk()
        test.update(n, n)  # every sample a hit
    assert test.certified() == [True, True, True, True]
    assert test.certified_radius() == 1.0
    # Stops at the first check where the largest radius is certified with all hits.
    first = int(np.flatnonzero(fresh.certify_at[:, -1] <= fresh.check_times)[0])
    assert test.samples == fresh.check_times[first]


def test_runtime_guard_fires_on_a_certificate_weaker_than_fixed_n_cp(fresh: SequentialPlan) -> None:
    # A hand-made plan certifying r = 0 at 55 of 100 hits (binom.sf = 0.18 > alpha): the guard must stop it.
    k = len(RADII)
    certify_at = np.maximum(fresh.certify_at, 0)
    certify_at[0, 0] = 55
    bad = SequentialPlan(
        fresh.sigma, fresh.radii, fresh.alpha, fresh.n_max, fresh.check_every, fresh.check_times,
        np.maximum.accumulate(certify_at, axis=1), np.minimum(fresh.give_up_at, 54), fresh.final_at,
    )  # fmt: skip
    assert binom.sf(54, 100, 0.5) > fresh.alpha and k == 4
    test = SequentialTest(bad)
    with pytest.raises(AssertionError, match="guard"):
        test.update(60, 100)


def test_a_planted_cache_of_cp_rechecked_at_every_look_is_refused(
    tmp_path: Path, fresh: SequentialPlan
) -> None:
    """Issue 19: boundaries of "Clopper-Pearson at alpha re-checked at every look" pass the fixed-n CP
    check (each is a CP certificate) but certify falsely at about 10x alpha; the loader must refuse them."""
    from tests.test_sequential_validity import cp_rechecked_every_batch

    sequential_plan(**ARGS, cache_dir=tmp_path)
    path = only_file(tmp_path)
    # Every look CP at alpha; final_at (only checked, never used to decide) kept from the valid plan.
    bad = dataclasses.replace(cp_rechecked_every_batch(fresh), final_at=fresh.final_at)
    plan_module.check_against_fixed_cp(bad)  # the old check alone lets it through
    with np.load(path) as data:
        arrays = dict(data)
    arrays |= {"certify_at": bad.certify_at, "give_up_at": bad.give_up_at, "final_at": bad.final_at}
    np.savez(path, **arrays)
    with pytest.warns(UserWarning, match="not backed by the e-process"):
        plan = sequential_plan(**ARGS, cache_dir=tmp_path)
    assert_same_plan(plan, fresh)


def test_the_eprocess_check_accepts_computed_plans(fresh: SequentialPlan) -> None:
    plan_module.check_against_eprocess(fresh)
    # One boundary point lowered by one count is no longer backed by E_k >= 5 / alpha.
    i = int(np.flatnonzero(fresh.certify_at[:-1, 1] <= fresh.check_times[:-1])[5])
    lowered = fresh.certify_at.copy()
    lowered[i, 1:] -= 1
    weaker = dataclasses.replace(
        fresh, certify_at=lowered, give_up_at=np.minimum(fresh.give_up_at, lowered - 1)
    )
    with pytest.raises(ValueError, match="not backed"):
        plan_module.check_against_eprocess(weaker)
