"""Denoisers: frozen maps from noisy [0,1] images to denoised [0,1] images."""

from ddsx.denoisers.base import Denoiser, IdentityDenoiser
from ddsx.denoisers.dds import DiffusionDenoiser
from ddsx.denoisers.load import load_diffusers_denoiser

__all__ = ["Denoiser", "DiffusionDenoiser", "IdentityDenoiser", "load_diffusers_denoiser"]
