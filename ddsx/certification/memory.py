"""Whether one forward batch of noisy copies can fit in the device's memory, checked before any of it
is allocated.

A batch of B noisy copies of a (C, H, W) image is B*C*H*W float32 values, held at least
``PIPELINE_COPIES`` times at once while it runs (the noise, the noisy images, the denoised images); a
voting denoiser (ddsx.denoisers.vote) returns ``votes`` denoised images per copy, so its denoised
images count ``votes`` times. The models' activations come on top, so a batch this check lets through may still not fit; one it
refuses surely does not, and would otherwise end in an out-of-memory kill or a traceback after the
models were loaded. ``certify.batch_size=auto`` is not checked: its candidates are small, and an
accelerator's out-of-memory ends its search (ddsx.certification.autotune).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ddsx.certification.settings import InvalidSettingError

# Tensors of the full batch alive at the same time in ddsx.smoothing.loop: the noise blocks, their
# concatenation into the noisy batch, the denoiser's output.
PIPELINE_COPIES = 3
BYTES_PER_VALUE = 4  # noise and images are float32 (autocast changes the models' dtype, not theirs)


def batch_bytes(batch: int, image_shape: Sequence[int], denoised_per_copy: int = 1) -> int:
    """Bytes the pipeline holds at least for one batch of ``batch`` noisy copies of one image, with
    ``denoised_per_copy`` denoised images per copy (a voting denoiser's votes)."""
    held = PIPELINE_COPIES - 1 + int(denoised_per_copy)
    return int(batch) * math.prod(int(side) for side in image_shape) * BYTES_PER_VALUE * held


def available_bytes(device: torch.device) -> int | None:
    """Memory free for a new batch on ``device``: a GPU's free memory, the RAM the OS can give without
    swapping (MemAvailable); None where it cannot be told (the check is then skipped)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_batch_fits(
    batch_size: int | str,
    copies_needed: int,
    image_shape: Sequence[int],
    device: torch.device,
    denoised_per_copy: int = 1,
) -> None:
    """Refuse ``certify.batch_size`` when its batch cannot fit on ``device``.

    A batch never holds more than ``copies_needed`` (every noisy copy of every example to certify), so
    a large batch size over a small run is harmless and allowed.
    """
    if batch_size == "auto":
        return
    batch = min(int(batch_size), max(1, int(copies_needed)))
    needed, free = batch_bytes(batch, image_shape, denoised_per_copy), available_bytes(device)
    if free is None or needed <= free:
        return
    largest = max(1, free // batch_bytes(1, image_shape, denoised_per_copy))
    raise InvalidSettingError(
        f"certify.batch_size={batch_size}: one batch of {batch:,} noisy images of shape "
        f"{tuple(int(s) for s in image_shape)} needs at least {_gib(needed)} on {device} "
        f"({PIPELINE_COPIES - 1 + denoised_per_copy} float32 copies), but {_gib(free)} is free; set certify.batch_size to at most "
        f"{largest:,} (less leaves room for the models), or certify.batch_size=auto"
    )


def _gib(size: int) -> str:
    return f"{size / 2**30:.3g} GiB"
