"""One-sided mixture e-processes for a Bernoulli probability against a threshold (docs/sequential.md section 3).

For a threshold p and a prior pi on (p, 1] (the "above" side) the e-value after ``hits`` successes in
``t`` trials is

    E(t) = integral of q^A (1-q)^(t-A) / (p^A (1-p)^(t-A)) d pi(q),

a nonnegative supermartingale with E(0) = 1 whenever the true probability is <= p, so by Ville's
inequality P(sup_t E(t) >= 1/a) <= a. The "below" side mirrors it (prior on [0, p), null p_A >= p).
The prior is fixed before any sample is seen: half Beta(1/2, 1/2) (catches far alternatives fast) and
half Beta(1000 p, 1000 (1 - p)) (concentrated near p, for alternatives just past the threshold), each
truncated to the side and renormalised. For a Beta(a, b) component the integral is closed form:

    B(A + a, t - A + b) * S(p; A + a, t - A + b) / (B(a, b) * S(p; a, b)) / (p^A (1-p)^(t-A))

with S the truncated mass (beta.sf above, beta.cdf below). Everything is computed in log space: the
posterior mass uses beta.logsf / beta.logcdf, never a floored probability. An underflowing mass gives
-inf (an e-value of 0, never certifying), which is only reached when the data point away from the
side, where the exact e-value is < 1 anyway; a floor such as 1e-300 would instead be astronomically
larger than the truth at large t and certify null streams.
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaln
from scipy.stats import beta, norm

# Mixture prior: (weight, a(p), b(p)) per component.
PRIOR_CONCENTRATION = 1000.0


def prior_components(p: float) -> list[tuple[float, float, float]]:
    """The prior's Beta components (weight, a, b) before truncation, for threshold ``p``."""
    return [(0.5, 0.5, 0.5), (0.5, PRIOR_CONCENTRATION * p, PRIOR_CONCENTRATION * (1.0 - p))]


def log_threshold_terms(z: float) -> tuple[float, float, float]:
    """(p, log p, log(1 - p)) for p = Phi(z), with both logs accurate in the tails."""
    return float(norm.cdf(z)), float(norm.logcdf(z)), float(norm.logsf(z))


def log_evalue(hits: np.ndarray, t: np.ndarray, z: float, side: str = "above") -> np.ndarray:
    """log E after ``hits`` successes in ``t`` trials for threshold p = Phi(z); arrays broadcast.

    side "above": prior on (p, 1], large when the probability is above p (increasing in hits).
    side "below": prior on [0, p), large when it is below p (decreasing in hits).
    """
    if side not in ("above", "below"):
        raise ValueError(f"side must be 'above' or 'below', got {side!r}")
    hits = np.asarray(hits, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    misses = t - hits
    p, log_p, log_1mp = log_threshold_terms(z)
    log_mass = beta.logsf if side == "above" else beta.logcdf
    terms = []
    weights = []
    for weight, a, b in prior_components(p):
        prior_mass = float(log_mass(p, a, b))
        if not np.isfinite(prior_mass) or not (a > 0 and b > 0):
            # The component puts no representable mass on this side: leave it out (decided from p alone,
            # before any data, so the remaining mixture is still a fixed prior).
            continue
        weights.append(weight)
        terms.append(
            betaln(hits + a, misses + b) + log_mass(p, hits + a, misses + b) - betaln(a, b) - prior_mass
        )
    if not terms:
        raise ValueError(f"no prior component has mass on the {side} side of p = Phi({z})")
    log_w = np.log(np.asarray(weights) / np.sum(weights))
    stacked = np.stack(np.broadcast_arrays(*terms)) + log_w.reshape((-1,) + (1,) * np.ndim(terms[0]))
    with np.errstate(divide="ignore"):
        mixture = np.logaddexp.reduce(stacked, axis=0)
    log_null = hits * log_p + misses * log_1mp
    out = mixture - log_null
    if np.isnan(out).any():
        raise FloatingPointError(f"NaN in the log e-value at z = {z} ({side})")
    return out
