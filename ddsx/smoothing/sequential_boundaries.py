"""SEQ-CERT decision boundaries (docs/sequential.md sections 3-4), precomputed as integer arrays and cached.

A plan turns the anytime-valid test of "p_A >= p_k := Phi(r_k / sigma)" for every grid radius r_k into
integer comparisons of the running hit count with precomputed boundaries at fixed check times:

- certify r_k at check i when the mixture e-process E_k reaches 5 / alpha (Ville: false certification
  <= alpha / 5 under any stopping), or at the last check (n_max) when the fixed-n Clopper-Pearson bound
  at level 0.8 alpha reaches p_k (one fixed look: <= 0.8 alpha). Together <= alpha per radius.
- give r_k up (futility) when the mirror e-process reaches 1 / 0.05 or no future count can reach a
  certification boundary. Giving up only ever lowers the chance of certifying, so it costs no validity.
- radii are nested: both boundaries are made non-decreasing in k by a running max over j <= k, which is
  only ever more conservative, and certifying r_k then certifies every smaller radius.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binom, norm

from ddsx.smoothing.eprocess import log_evalue

# Share of alpha spent by the Ville (anytime) boundary; the rest goes to the one fixed-n look at n_max.
VILLE_SHARE = 0.2
# Futility: give a radius up once the mirror e-process (evidence that p_A < p_k) reaches this.
FUTILITY_EVALUE = 1.0 / 0.05
# Bump when the boundary computation changes, so that older cache files are recomputed.
PLAN_VERSION = 1


@dataclass(frozen=True, eq=False)
class SequentialPlan:
    """Integer decision boundaries of SEQ-CERT for one (sigma, radii, alpha, n_max, check_every).

    Attributes:
        sigma: noise level the radii refer to.
        radii: ascending grid; r = 0 means "correct / not abstaining" (threshold 1/2).
        alpha: per-point failure probability of every certificate.
        n_max: sample budget.
        check_every: samples between checks.
        check_times: (T,) ascending sample counts at which decisions are made; the last is n_max.
        certify_at: (T, K) r_k is certified at check i iff hits >= certify_at[i, k]; non-decreasing in
            k; a value > check_times[i] means impossible there. The last row includes the final look.
        give_up_at: (T, K) r_k is abandoned at check i iff hits <= give_up_at[i, k] (-1: never); always
            < certify_at, non-decreasing in k; the last row abandons everything not certified.
        final_at: (K,) at n_max, the Clopper-Pearson (level 0.8 alpha) boundary alone.
    """

    sigma: float
    radii: tuple[float, ...]
    alpha: float
    n_max: int
    check_every: int
    check_times: np.ndarray
    certify_at: np.ndarray
    give_up_at: np.ndarray
    final_at: np.ndarray

    def __post_init__(self) -> None:
        _check_settings(self.sigma, self.radii, self.alpha, self.n_max, self.check_every)
        for name in ("check_times", "certify_at", "give_up_at", "final_at"):
            array = np.array(getattr(self, name), dtype=np.int64, copy=True)
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        object.__setattr__(self, "radii", tuple(float(r) for r in self.radii))
        _check_shapes(self)

    @property
    def thresholds(self) -> np.ndarray:
        """(K,) p_k = Phi(r_k / sigma): r_k is a true radius iff p_A >= p_k."""
        return norm.cdf(np.asarray(self.radii) / self.sigma)


def sequential_plan(
    sigma: float,
    radii: tuple[float, ...] | list[float],
    alpha: float,
    n_max: int,
    check_every: int,
    cache_dir: str | os.PathLike | None = None,
) -> SequentialPlan:
    """The SEQ-CERT plan, loaded from the on-disk cache when a valid one exists, else computed and cached.

    The cache file is data, never trusted: its stored key must equal this call's, its arrays must have
    the right shapes and pass every structural check, and every certification boundary is re-verified
    against the e-process (or the final CP look) it claims to come from (``check_against_eprocess``),
    so no cache can weaken a certificate; anything else is recomputed.
    cache_dir: default ``$DDSX_CACHE/sequential``, or ``~/.cache/ddsx/sequential`` when unset.
    """
    radii = tuple(float(r) for r in radii)
    sigma, alpha, n_max, check_every = float(sigma), float(alpha), int(n_max), int(check_every)
    _check_settings(sigma, radii, alpha, n_max, check_every)
    key = _cache_key(sigma, radii, alpha, n_max, check_every)
    path = _cache_dir(cache_dir) / f"sequential-plan-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"
    plan = _load(path, key, sigma, radii, alpha, n_max, check_every)
    if plan is None:
        plan = compute_plan(sigma, radii, alpha, n_max, check_every)
        _save(path, key, plan)
    return plan


def compute_plan(
    sigma: float, radii: tuple[float, ...], alpha: float, n_max: int, check_every: int
) -> SequentialPlan:
    """Compute the boundaries (no cache)."""
    _check_settings(sigma, radii, alpha, n_max, check_every)
    check_times = _check_times(n_max, check_every)
    z = np.asarray(radii, dtype=np.float64) / sigma
    ville = nest(ville_boundaries(check_times, z, VILLE_SHARE * alpha))
    final = nest(final_boundaries(n_max, z, (1.0 - VILLE_SHARE) * alpha))
    certify_at = ville.copy()
    certify_at[-1] = np.minimum(ville[-1], final)  # min of two nested rows stays nested
    give_up_at = futility_boundaries(check_times, z, certify_at)
    return SequentialPlan(sigma, radii, alpha, n_max, check_every, check_times, certify_at, give_up_at, final)


def nest(boundaries: np.ndarray) -> np.ndarray:
    """Running max over the radius axis (last): boundary_k <- max over j <= k of boundary_j."""
    return np.maximum.accumulate(np.asarray(boundaries, dtype=np.int64), axis=-1)


def ville_boundaries(check_times: np.ndarray, z: np.ndarray, level: float) -> np.ndarray:
    """(T, K) smallest hit count A with E_k(t) >= 1 / level (t + 1 when none in [0, t])."""
    log_bound = -np.log(level)
    out = np.empty((len(check_times), len(z)), dtype=np.int64)
    for k, zk in enumerate(z):
        out[:, k] = _first_true(check_times, lambda a, t, zk=zk: log_evalue(a, t, zk, "above") >= log_bound)
    return out


def final_boundaries(n_max: int, z: np.ndarray, level: float) -> np.ndarray:
    """(K,) smallest A with binom.sf(A - 1, n_max, p_k) <= level, i.e. CP lower bound >= p_k (n_max + 1: none)."""
    p = norm.cdf(z)
    out = np.empty(len(z), dtype=np.int64)
    times = np.array([n_max], dtype=np.int64)
    for k, pk in enumerate(p):
        out[k] = _first_true(times, lambda a, t, pk=pk: binom.sf(a - 1, t, pk) <= level)[0]
    return out


def futility_boundaries(check_times: np.ndarray, z: np.ndarray, certify_at: np.ndarray) -> np.ndarray:
    """(T, K) largest A at which r_k is abandoned (-1: never); < certify_at and nested."""
    log_bound = np.log(FUTILITY_EVALUE)
    mirror = np.empty_like(certify_at)
    for k, zk in enumerate(z):
        # Largest A with mirror E >= bound = (first A where it is below) - 1; mirror E decreases in A.
        mirror[:, k] = (
            _first_true(check_times, lambda a, t, zk=zk: log_evalue(a, t, zk, "below") < log_bound) - 1
        )
    # Unreachable: even if every later sample is a hit, no later check (nor the final look) certifies.
    # Needed at check i: A_i >= min over j > i of (certify_at[j] - (t_j - t_i)).
    need = certify_at - check_times[:, None]
    later = np.full_like(need, np.iinfo(np.int64).max // 4)
    later[:-1] = np.minimum.accumulate(need[::-1], axis=0)[::-1][1:]
    unreachable = np.minimum(later + check_times[:, None], check_times[:, None] + 1) - 1
    unreachable[-1] = certify_at[-1] - 1  # nothing comes after n_max
    give_up = nest(np.maximum(mirror, unreachable))
    return np.clip(np.minimum(give_up, certify_at - 1), -1, None)


def _first_true(check_times: np.ndarray, predicate) -> np.ndarray:
    """Per t in check_times, the smallest A in [0, t] with predicate(A, t) (t + 1 if none).

    The predicate must be monotone in A (false ... false true ... true); bisection, vectorised over t.
    """
    t = np.asarray(check_times, dtype=np.int64)
    lo = np.full_like(t, -1)  # predicate(lo) taken false
    hi = t + 1  # predicate(hi) taken true
    while True:
        open_ = hi - lo > 1
        if not open_.any():
            return hi
        mid = (lo[open_] + hi[open_]) // 2
        ok = np.asarray(predicate(mid, t[open_]), dtype=bool)
        lo[open_] = np.where(ok, lo[open_], mid)
        hi[open_] = np.where(ok, mid, hi[open_])


def _check_times(n_max: int, check_every: int) -> np.ndarray:
    times = np.arange(check_every, n_max + 1, check_every, dtype=np.int64)
    if len(times) == 0 or times[-1] != n_max:
        times = np.append(times, np.int64(n_max))
    return times


def _check_settings(sigma: float, radii: tuple, alpha: float, n_max: int, check_every: int) -> None:
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    r = np.asarray(radii, dtype=np.float64)
    if r.ndim != 1 or len(r) == 0 or not np.all(np.isfinite(r)) or np.any(r < 0) or np.any(np.diff(r) <= 0):
        raise ValueError(f"radii must be a non-empty strictly ascending list of numbers >= 0, got {radii!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    for name, value in (("n_max", n_max), ("check_every", check_every)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_shapes(plan: SequentialPlan) -> None:
    """Structural invariants every plan (computed, hand-built or loaded) must satisfy."""
    t, k = plan.check_times, len(plan.radii)
    n = len(t)
    if t.ndim != 1 or n == 0 or np.any(np.diff(t) <= 0) or t[0] < 1 or t[-1] != plan.n_max:
        raise ValueError("check_times must be ascending positive sample counts ending at n_max")
    if plan.certify_at.shape != (n, k) or plan.give_up_at.shape != (n, k) or plan.final_at.shape != (k,):
        raise ValueError(f"boundary shapes must be ({n}, {k}) and ({k},)")
    if np.any(np.diff(plan.certify_at, axis=1) < 0) or np.any(np.diff(plan.give_up_at, axis=1) < 0):
        raise ValueError("boundaries must be non-decreasing in the radius (nested)")
    if (
        np.any(plan.certify_at < 0)
        or np.any(plan.give_up_at < -1)
        or np.any(plan.give_up_at >= plan.certify_at)
    ):
        raise ValueError("need 0 <= certify_at, -1 <= give_up_at < certify_at")


def check_against_fixed_cp(plan: SequentialPlan) -> None:
    """Raise unless every reachable certification boundary is a fixed-n CP certificate at alpha.

    binom.sf(A - 1, t, p_k) <= alpha at each boundary point (t, A = certify_at) with A <= t (sf
    decreases in A, so then every count above it too), and <= 0.8 alpha at final_at.
    """
    p = plan.thresholds[None, :]
    t = plan.check_times[:, None]
    reachable = plan.certify_at <= t
    sf = binom.sf(plan.certify_at - 1, np.broadcast_to(t, plan.certify_at.shape), p)
    if np.any(np.isnan(sf)) or np.any(sf[reachable] > plan.alpha):
        raise ValueError("a certification boundary is weaker than fixed-n Clopper-Pearson at alpha")
    possible = plan.final_at <= plan.n_max
    final_sf = binom.sf(plan.final_at - 1, plan.n_max, plan.thresholds)
    if np.any(final_sf[possible] > (1.0 - VILLE_SHARE) * plan.alpha * (1 + 1e-9)):
        raise ValueError("the final boundary is weaker than Clopper-Pearson at 0.8 alpha")


def check_against_eprocess(plan: SequentialPlan) -> None:
    """Raise unless every reachable certification boundary is backed by the validity argument itself.

    At every check i and radius k with certify_at[i, k] <= t_i, the count certify_at[i, k] must give
    E_k(t_i) >= 1 / (VILLE_SHARE * alpha) (Ville's part), except at the last check, where it may
    instead pass the fixed-n Clopper-Pearson look at (1 - VILLE_SHARE) * alpha. E_k and the CP tail
    are monotone in the count, so every larger count certifies validly too. This is what makes a
    loaded plan safe: ``check_against_fixed_cp`` alone lets "CP re-checked at every look" through,
    which certifies at about 10x alpha (docs/sequential.md section 2). Cheap: one e-value per boundary point, where
    computing the plan bisects.
    """
    t = plan.check_times
    z = np.asarray(plan.radii, dtype=np.float64) / plan.sigma
    log_bound = -np.log(VILLE_SHARE * plan.alpha)
    for k, zk in enumerate(z):
        counts = plan.certify_at[:, k]
        reachable = counts <= t
        ok = np.zeros(len(t), dtype=bool)
        ok[reachable] = log_evalue(counts[reachable], t[reachable], float(zk), "above") >= log_bound
        if reachable[-1] and not ok[-1]:
            tail = binom.sf(counts[-1] - 1, plan.n_max, plan.thresholds[k])
            ok[-1] = tail <= (1.0 - VILLE_SHARE) * plan.alpha * (1 + 1e-9)
        if np.any(reachable & ~ok):
            first = int(np.flatnonzero(reachable & ~ok)[0])
            raise ValueError(
                f"the certification boundary {int(counts[first])} at t = {int(t[first])} for r = "
                f"{plan.radii[k]} is not backed by the e-process (E < {np.exp(log_bound):.4g}) nor the "
                "final Clopper-Pearson look"
            )


def _cache_key(sigma: float, radii: tuple[float, ...], alpha: float, n_max: int, check_every: int) -> str:
    fields = {
        "version": PLAN_VERSION,
        "sigma": repr(sigma),
        "radii": [repr(r) for r in radii],
        "alpha": repr(alpha),
        "n_max": n_max,
        "check_every": check_every,
    }
    return json.dumps(fields, sort_keys=True)


def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    root = os.environ.get("DDSX_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "ddsx") / "sequential"


def _load(
    path: Path, key: str, sigma: float, radii: tuple[float, ...], alpha: float, n_max: int, check_every: int
) -> SequentialPlan | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"][()]) != key:
                raise ValueError("cache key differs")
            arrays = {
                name: np.asarray(data[name])
                for name in ("check_times", "certify_at", "give_up_at", "final_at")
            }
        for name, array in arrays.items():
            if array.dtype != np.int64:
                raise ValueError(f"{name} has dtype {array.dtype}")
        if not np.array_equal(arrays["check_times"], _check_times(n_max, check_every)):
            raise ValueError("check times differ")
        plan = SequentialPlan(sigma, radii, alpha, n_max, check_every, **arrays)
        check_against_fixed_cp(plan)
        check_against_eprocess(plan)  # the guarantee itself, not only a property it implies
        return plan
    except Exception as error:  # any unreadable or inconsistent file: recompute, never trust
        warnings.warn(f"ignoring sequential plan cache {path}: {error}", stacklevel=3)
        return None


def _save(path: Path, key: str, plan: SequentialPlan) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(
            tmp,
            key=np.array(key),
            check_times=plan.check_times,
            certify_at=plan.certify_at,
            give_up_at=plan.give_up_at,
            final_at=plan.final_at,
        )
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    except OSError as error:
        warnings.warn(f"could not cache the sequential plan at {path}: {error}", stacklevel=3)
