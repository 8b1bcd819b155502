"""Fitting images to a diffusion model's resolution and back (pad/crop or resize).

A diffusion UNet is trained at one resolution (28x28 MNIST may meet a 32x32 model; 224x224
ImageNet crops meet a 256x256 model). ``fit_to_model`` returns the adapted batch plus a function
that maps the model's output back to the input's size. Both are differentiable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

ResolutionMode = Literal["auto", "resize", "pad", "native"]
PadMode = Literal["reflect", "replicate", "constant"]
RESOLUTION_MODES = ("auto", "resize", "pad", "native")
PAD_MODES = ("reflect", "replicate", "constant")


def as_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """None | 32 | (32, 32) | [32, 32] -> None | (32, 32)."""
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    values = tuple(int(s) for s in size)
    if len(values) != 2:
        raise ValueError(f"an image size is an int or (height, width), got {size!r}")
    return values  # type: ignore[return-value]


def resize(x: torch.Tensor, size: tuple[int, int], interpolation: str = "bilinear") -> torch.Tensor:
    """(N, C, H, W) -> (N, C, *size); antialiased when shrinking so no aliasing artefacts appear."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if interpolation in ("bilinear", "bicubic"):
        shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        return F.interpolate(x, size=size, mode=interpolation, align_corners=False, antialias=shrinking)
    return F.interpolate(x, size=size, mode=interpolation)


def pad_to(
    x: torch.Tensor, size: tuple[int, int], mode: str = "reflect", value: float = 0.0
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Centre-pad (N, C, H, W) up to ``size``; returns the padded batch and (left, right, top, bottom)."""
    height, width = x.shape[-2:]
    if height > size[0] or width > size[1]:
        raise ValueError(
            f"resolution=pad cannot fit a {height}x{width} image into a {size[0]}x{size[1]} model: "
            "it only pads smaller images; use resolution=resize (or native for a fully convolutional run)"
        )
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    pads = (left, size[1] - width - left, top, size[0] - height - top)
    if mode == "constant":
        return F.pad(x, pads, mode="constant", value=value), pads
    return F.pad(x, pads, mode=mode), pads


def crop(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo ``pad_to``: remove (left, right, top, bottom) pixels."""
    left, right, top, bottom = pads
    height, width = x.shape[-2:]
    return x[..., top : height - bottom, left : width - right]


def fit_to_model(
    x: torch.Tensor,
    model_size: tuple[int, int] | None,
    mode: ResolutionMode = "resize",
    interpolation: str = "bilinear",
    pad_mode: PadMode = "reflect",
    pad_value: float = 0.0,
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """(N, C, H, W) -> (batch at the model's size, undo) where undo maps outputs back to (H, W)."""
    if mode not in RESOLUTION_MODES:
        raise ValueError(f"resolution must be one of {RESOLUTION_MODES}, got {mode!r}")
    size_in = (int(x.shape[-2]), int(x.shape[-1]))
    if model_size is None or mode == "native" or size_in == tuple(model_size):
        return x, lambda y: y
    if mode == "auto":
        # Padding keeps the noise white with the std the t* rule assumes; resizing a noisy image does
        # not (upsampling correlates and shrinks it), so resize only images too large to pad.
        fits = size_in[0] <= model_size[0] and size_in[1] <= model_size[1]
        mode = "pad" if fits else "resize"
    if mode == "pad":
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        padded, pads = pad_to(x, model_size, pad_mode, pad_value)
        return padded, lambda y: crop(y, pads)
    return resize(x, model_size, interpolation), lambda y: resize(y, size_in, interpolation)
