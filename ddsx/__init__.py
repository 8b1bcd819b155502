"""ddsx: certified robustness with diffusion denoised smoothing, robust to covariate shift."""

__version__ = "0.1.0"
