"""Randomized smoothing: the smoothed classifier, its certificates, and reproducible noise."""

from ddsx.smoothing.bounds import certified_radius, lower_confidence_bound, top_two_p_value
from ddsx.smoothing.noise import example_generator, example_seed, gaussian_batches
from ddsx.smoothing.smooth import ABSTAIN, Certificate, Smooth, resolve_autocast_dtype

__all__ = [
    "ABSTAIN",
    "Certificate",
    "Smooth",
    "certified_radius",
    "example_generator",
    "example_seed",
    "gaussian_batches",
    "lower_confidence_bound",
    "resolve_autocast_dtype",
    "top_two_p_value",
]
