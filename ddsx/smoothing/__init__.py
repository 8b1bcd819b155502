"""Randomized smoothing: the smoothed classifier, its certificates, and reproducible noise."""

from ddsx.smoothing.bounds import certified_radius, lower_confidence_bound, top_two_p_value
from ddsx.smoothing.noise import GaussianStream, example_generator, example_seed, gaussian_batches
from ddsx.smoothing.sequential import SequentialPlan, SequentialTest, decide, sequential_plan
from ddsx.smoothing.smooth import ABSTAIN, Certificate, SequentialCertificate, Smooth, resolve_autocast_dtype

__all__ = [
    "ABSTAIN",
    "Certificate",
    "GaussianStream",
    "SequentialCertificate",
    "SequentialPlan",
    "SequentialTest",
    "Smooth",
    "certified_radius",
    "decide",
    "example_generator",
    "example_seed",
    "gaussian_batches",
    "lower_confidence_bound",
    "resolve_autocast_dtype",
    "sequential_plan",
    "top_two_p_value",
]
