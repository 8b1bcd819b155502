"""A consistency model on disk: a diffusers folder (unet/, scheduler/) plus consistency.json, and its loader.

consistency.json is what says "this UNet is a consistency model's F, not a DDPM's epsilon": without it
the same weights would load as a (wrong) DDS denoiser, so ``load_diffusers_denoiser`` refuses a folder
that has one, and ``load_consistency_denoiser`` refuses a folder that lacks it. Its fields:

    {"model": "consistency", "format": 1, "parametrisation": "<the formula>", "t_min": 0, "t_max": 420}

The file is data from anywhere: it is read only if small, every field is checked (the formula must be
the one this ddsx computes, the timesteps integers inside the folder's own schedule), and a refusal is
one line naming the file and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from ddsx.denoisers.consistency import PARAMETRISATION, ConsistencyDenoiser
from ddsx.denoisers.folder import save_diffusers_folder
from ddsx.denoisers.load import CONSISTENCY_MARKER as MARKER
from ddsx.denoisers.load import DTYPES, find_diffusers_parts, load_unet
from ddsx.denoisers.schedule import alphas_cumprod_from_scheduler_config
from ddsx.errors import ModelFileError
from ddsx.utils.logging import get_logger

log = get_logger(__name__)

FORMAT = 1
MAX_MARKER_BYTES = 65_536  # the real file is about 150 bytes


def save_consistency_folder(
    unet: nn.Module,
    scheduler_config: dict[str, Any],
    dst: str | Path,
    t_min: int,
    t_max: int,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write the student ``unet`` with the teacher's schedule as a diffusers folder, and consistency.json."""
    from diffusers import DDPMScheduler

    dst = save_diffusers_folder(unet, DDPMScheduler.from_config(dict(scheduler_config)), dst, metadata)
    marker = {"model": "consistency", "format": FORMAT, "parametrisation": PARAMETRISATION}
    (dst / MARKER).write_text(
        json.dumps(marker | {"t_min": int(t_min), "t_max": int(t_max)}, indent=2) + "\n"
    )
    return dst


def read_marker(folder: Path, num_train_timesteps: int) -> tuple[int, int]:
    """(t_min, t_max) from ``folder``/consistency.json, every field checked; ModelFileError otherwise."""
    path = folder / MARKER
    if not path.is_file():
        raise ModelFileError(
            f"{folder} has no {MARKER}: it is not a consistency model (a DDPM folder loads with "
            "denoiser=diffusers; distil one with `ddsx-denoiser mode=distill`)"
        )
    if path.stat().st_size > MAX_MARKER_BYTES:
        raise ModelFileError(
            f"{path} is {path.stat().st_size:,} bytes, not a consistency marker (at most {MAX_MARKER_BYTES:,})"
        )
    try:
        marker = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path} is not JSON ({error})") from None
    if not isinstance(marker, dict):
        raise ModelFileError(f"{path} must hold a JSON object, got {type(marker).__name__}")
    expected = {"model": "consistency", "format": FORMAT, "parametrisation": PARAMETRISATION}
    for field, value in expected.items():
        if marker.get(field) != value or type(marker.get(field)) is not type(value):
            shown = repr(marker.get(field))[:60]
            raise ModelFileError(
                f"{path}: {field}={shown} is refused: this ddsx reads {field}={value!r} only"
            )
    bounds = {"t_min": (0, num_train_timesteps - 2), "t_max": (1, num_train_timesteps - 1)}
    for field, (lo, hi) in bounds.items():
        value = marker.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ModelFileError(
                f"{path}: {field}={repr(value)[:60]} is refused: it must be an integer timestep from {lo} to {hi} "
                f"(the folder's schedule has {num_train_timesteps} steps)"
            )
    if not marker["t_min"] < marker["t_max"]:
        raise ModelFileError(f"{path}: t_min={marker['t_min']} must be below t_max={marker['t_max']}")
    return marker["t_min"], marker["t_max"]


def load_consistency_denoiser(
    path: str | Path, sigma: float, dtype: str | None = None, **options: Any
) -> ConsistencyDenoiser:
    """A frozen ``ConsistencyDenoiser`` from a folder ``ddsx-denoiser mode=distill`` wrote.

    Args:
        path: the folder (unet/, scheduler/, consistency.json).
        sigma: smoothing noise level in [0,1] pixel units; its t* must lie in the distilled range.
        dtype: "float32", "float16", "bfloat16" or None (the saved weights' dtype).
        options: passed to ``ConsistencyDenoiser`` (resolution, pad_mode, output_size, t_star_rule, ...).
    """
    folder = Path(str(path)).expanduser()
    unet_dir, scheduler_file = find_diffusers_parts(folder)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} or null, got {dtype!r}")
    alphas_cumprod = alphas_cumprod_from_scheduler_config(
        json.loads(scheduler_file.read_text()), source=scheduler_file
    )
    t_min, t_max = read_marker(folder, int(alphas_cumprod.numel()))
    unet = load_unet(unet_dir, DTYPES[dtype] if dtype else None)
    denoiser = ConsistencyDenoiser(unet, alphas_cumprod, sigma, t_min=t_min, t_max=t_max, **options)
    denoiser.source = str(folder)
    info = denoiser.describe()
    log.info(
        "consistency denoiser from %s: sigma %.4g -> t* %d (achieved sigma %.4g), distilled on t %d..%d",
        folder,
        sigma,
        info["t_star"],
        info["achieved_sigma"],
        t_min,
        t_max,
    )
    return denoiser
