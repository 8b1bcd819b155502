"""Speed switches for the certification pipeline (denoiser, then classifiers): each off by default.

- ``autocast``: run the forward pass under ``torch.autocast`` ("auto": bfloat16 where the device
  supports it, float16 on older GPUs, full precision on CPUs without bf16 instructions);
- ``compile``: ``torch.compile`` each model, falling back to eager (with one logged line) when
  compilation or a compiled call fails;
- ``channels_last``: NHWC memory layout for the models and the noisy batches (fp32, same function);
- ``pin_memory``: test images are copied to an accelerator from pinned memory, without blocking.

A lower-precision or compiled pipeline is another base classifier: the certificate holds for the
function that ran, so autocast and compile are part of the result file's compared settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ddsx.utils.logging import get_logger

log = get_logger(__name__)


def resolve_autocast_name(name: str | None, device: torch.device) -> str | None:
    """``certify.autocast_dtype`` for ``device``: "auto" becomes "bfloat16", "float16" or None."""
    if name is None or str(name).lower() != "auto":
        return name
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device.type == "cpu":
        # oneDNN's bf16 kernels need AVX-512 BF16 (or AMX); without them bf16 is slower than fp32.
        return "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    return None


class CompiledOrEager:
    """``torch.compile(module)`` that falls back to ``module`` itself when a compiled call fails.

    Compilation is lazy (it happens at the first call, and again for new input shapes), so the
    failure can only be caught at a call. The fallback is permanent for this object and logged once;
    an error the eager module raises too is the caller's error and propagates.
    """

    def __init__(self, module: Callable[[torch.Tensor], torch.Tensor], name: str) -> None:
        self.module, self.name = module, name
        self.compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        try:
            self.compiled = torch.compile(module)
        except Exception as error:  # e.g. an unsupported Python or platform
            self._fall_back(error)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except Exception as error:
                self._fall_back(error)
        return self.module(x)

    def _fall_back(self, error: Exception) -> None:
        self.compiled = None
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        log.warning(
            "torch.compile of %s failed (%s: %s); running it eagerly (certify.compile=false avoids the try)",
            self.name,
            type(error).__name__,
            first_line[:200],
        )


def prepare_model(
    module: nn.Module | None, name: str, *, compile: bool, channels_last: bool
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The callable the engine runs for ``module`` (None stays None: no denoiser)."""
    if module is None:
        return None
    if channels_last and isinstance(module, nn.Module):
        module.to(memory_format=torch.channels_last)  # in place: parameters are re-laid out, not copied
    return CompiledOrEager(module, name) if compile else module


def to_device(image: Any, device: torch.device, pin_memory: bool) -> torch.Tensor:
    """A test image on ``device``: from pinned memory without blocking on accelerators when asked."""
    x = torch.as_tensor(image)
    if pin_memory and device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)
