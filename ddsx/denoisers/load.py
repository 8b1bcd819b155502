"""Loading a DDS denoiser from a local diffusers folder (offline, safe deserialisation only).

Accepted layouts:

    <path>/unet/{config.json, diffusion_pytorch_model.safetensors|.bin}     a diffusers pipeline folder
    <path>/scheduler/scheduler_config.json                                  (model_index.json optional)

    <path>/{config.json, diffusion_pytorch_model.*, scheduler_config.json}   the UNet folder itself

``ddsx-denoiser`` writes the first layout (training and ``mode=convert``). Weights load through
diffusers, which reads safetensors or ``torch.load(weights_only=True)``; nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ddsx.denoisers.dds import DiffusionDenoiser
from ddsx.denoisers.schedule import alphas_cumprod_from_scheduler_config
from ddsx.errors import ModelFileError
from ddsx.utils.logging import get_logger

log = get_logger(__name__)

WHAT_TO_PUT_THERE = (
    "a diffusers folder with unet/ (config.json + diffusion_pytorch_model.safetensors) and "
    "scheduler/scheduler_config.json (or model_index.json), or the UNet folder itself holding config.json, "
    "its weights and scheduler_config.json. Train one with `ddsx-denoiser` or convert an OpenAI "
    "checkpoint with `ddsx-denoiser mode=convert`."
)

WEIGHT_SUFFIXES = (".safetensors", ".bin")

# A folder with this file holds a consistency model (ddsx.denoisers.consistency_folder): its UNet is no
# DDPM's epsilon model, so loading it as one would give a wrong denoiser without any error.
CONSISTENCY_MARKER = "consistency.json"

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def find_diffusers_parts(path: str | Path) -> tuple[Path, Path]:
    """(unet folder, scheduler_config.json) inside ``path``; FileNotFoundError saying what is missing."""
    root = Path(str(path)).expanduser()
    if not root.exists():
        raise FileNotFoundError(
            f"denoiser path {root.absolute()} does not exist. Put there {WHAT_TO_PUT_THERE}; or point "
            "ddsx at the folder that holds denoisers/ with DDSX_CHECKPOINTS=<folder> or "
            "paths.checkpoint_dir=<folder> (relative paths are taken from the folder you launch from)"
        )
    if not root.is_dir():
        raise FileNotFoundError(f"denoiser path {root} is a file, not a folder. Expected {WHAT_TO_PUT_THERE}")
    if (root / "unet" / "config.json").is_file():
        unet_dir = root / "unet"
    elif (root / "config.json").is_file():
        unet_dir = root
    else:
        hint = (
            " (model_index.json is there but unet/config.json is not)"
            if (root / "model_index.json").exists()
            else ""
        )
        raise FileNotFoundError(f"no UNet config found in {root}{hint}. Expected {WHAT_TO_PUT_THERE}")
    for candidate in (
        root / "scheduler" / "scheduler_config.json",
        unet_dir / "scheduler_config.json",
        root / "scheduler_config.json",
    ):
        if candidate.is_file():
            return unet_dir, candidate
    raise FileNotFoundError(
        f"no scheduler config in {root}: need scheduler/scheduler_config.json or scheduler_config.json next to "
        f"the UNet config (DDS reads the noise schedule from it). Expected {WHAT_TO_PUT_THERE}"
    )


def load_unet(unet_dir: str | Path, torch_dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A diffusers ``UNet2DModel`` from its folder; ValueError if the weights do not fit the config."""
    from diffusers import UNet2DModel

    unet_dir = Path(unet_dir)
    config = json.loads((unet_dir / "config.json").read_text())
    class_name = config.get("_class_name", "UNet2DModel")
    if class_name != "UNet2DModel":
        raise ModelFileError(
            f"{unet_dir / 'config.json'} describes a {class_name}; DDS needs a pixel-space UNet2DModel "
            "(latent or text-conditioned UNets are not image denoisers)"
        )
    try:
        unet, info = UNet2DModel.from_pretrained(
            unet_dir, local_files_only=True, output_loading_info=True, low_cpu_mem_usage=False
        )
    except OSError as err:  # diffusers: no weights file, or one that failed to load
        present = sorted(p.name for p in unet_dir.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        if present:
            # diffusers reads safetensors or torch.load(weights_only=True); its message may suggest
            # weights_only=False, which would run code from the file: not passed on.
            raise ModelFileError(
                f"the UNet weights in {unet_dir} ({', '.join(present)}) failed the safe load (safetensors, or "
                "torch.load with weights_only=True): the file is truncated or corrupted, or holds more than "
                "tensors. Re-save it as safetensors from a trusted copy (ddsx-denoiser writes safetensors)."
            ) from None
        raise FileNotFoundError(
            f"no UNet weights in {unet_dir} (no .safetensors or .bin file). Expected {WHAT_TO_PUT_THERE}"
        ) from err
    except RuntimeError as err:  # size mismatch: a different architecture
        raise ModelFileError(
            f"the weights in {unet_dir} do not fit the architecture in its config.json (wrong architecture): {err}"
        ) from err
    problems = {
        k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    if problems:
        detail = "; ".join(f"{k} ({len(v)}): {sorted(map(str, v))[:8]}" for k, v in problems.items())
        raise ModelFileError(
            f"the weights in {unet_dir} do not match the architecture in its config.json (wrong architecture): {detail}"
        )
    if torch_dtype is not None:
        unet = unet.to(torch_dtype)
    return unet


def load_diffusers_denoiser(
    path: str | Path, sigma: float, dtype: str | None = None, **options: Any
) -> DiffusionDenoiser:
    """A frozen ``DiffusionDenoiser`` from a local diffusers folder, tuned to pixel-unit ``sigma``.

    Args:
        path: see the module docstring for the accepted layouts.
        sigma: smoothing noise level in [0,1] pixel units (ValueError beyond the schedule's largest noise).
        dtype: "float32" (default: the saved weights' dtype as loaded), "float16", "bfloat16".
        options: passed to ``DiffusionDenoiser`` (num_steps, resolution, pad_mode, output_size, ...).
            ``prediction_type`` defaults to the scheduler config's.
    """
    unet_dir, scheduler_file = find_diffusers_parts(path)
    if (Path(str(path)).expanduser() / CONSISTENCY_MARKER).exists():
        raise ModelFileError(
            f"{path} holds a consistency model ({CONSISTENCY_MARKER}), not a DDPM: load it with "
            "denoiser=consistency denoiser.path=<folder>"
        )
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} or null, got {dtype!r}")
    scheduler_config = json.loads(scheduler_file.read_text())
    alphas_cumprod = alphas_cumprod_from_scheduler_config(scheduler_config, source=scheduler_file)
    unet = load_unet(unet_dir, DTYPES[dtype] if dtype else None)
    options.setdefault("prediction_type", scheduler_config.get("prediction_type", "epsilon"))
    denoiser = DiffusionDenoiser(unet, alphas_cumprod, sigma, **options)
    denoiser.source = str(Path(str(path)).expanduser())
    info = denoiser.describe()
    log.info(
        "DDS denoiser from %s: sigma %.4g -> t* %d of %d (achieved sigma %.4g), %d step(s)",
        denoiser.source,
        sigma,
        info["t_star"],
        info["num_train_timesteps"],
        info["achieved_sigma"],
        info["num_steps"],
    )
    return denoiser
