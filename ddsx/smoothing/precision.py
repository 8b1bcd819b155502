"""Reduced-precision forward passes: the one autocast helper of Smooth and the certification engine."""

from __future__ import annotations

import contextlib

import torch

AUTOCAST_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_autocast_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """None, "float16"/"bfloat16" (any case) or a torch dtype -> torch dtype or None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key in ("null", "none", "float32", "fp32"):
        return None
    key = {"fp16": "float16", "half": "float16", "bf16": "bfloat16"}.get(key, key)
    if key not in AUTOCAST_DTYPES:
        raise ValueError(f"autocast dtype must be null, float16 or bfloat16, got {dtype!r}")
    return AUTOCAST_DTYPES[key]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device`` with ``dtype``; full precision (no context) when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
