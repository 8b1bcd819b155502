"""OpenAI ADM checkpoint -> diffusers folder (UNet2DModel + DDPMScheduler), exactly equivalent.

diffusers' ``UNet2DModel`` expresses the ADM UNet exactly (checked numerically against OpenAI's code in
tests/test_denoiser_adm_convert.py):

- ResBlock with ``use_scale_shift_norm`` = ``ResnetBlock2D(time_embedding_norm="scale_shift")``:
  norm2(h) * (1 + scale) + shift, scale first, as in ADM; 1x1 ``conv_shortcut`` when channels change.
- ``resblock_updown`` = ``ResnetDownsampleBlock2D`` / ``ResnetUpsampleBlock2D`` and
  ``downsample_type=upsample_type="resnet"`` (avg-pool / nearest inside the block, as ADM's ResBlock).
- Attention: one GroupNorm(32) + fused qkv conv, heads laid out [head][q|k|v][ch]; split into
  to_q / to_k / to_v with the same per-head scale 1/sqrt(head_dim). All attention layers must share one
  head dimension (``attention_head_dim`` is a single number); both presets do (64), others raise.
- Sinusoidal timestep embedding [cos | sin] with frequencies exp(-ln(10^4) i / half) =
  ``flip_sin_to_cos=True, freq_shift=0``; GroupNorm 32 groups, eps 1e-5 everywhere (incl. attention:
  ``attn_norm_num_groups=32``, which diffusers would otherwise drop in the scale-shift mid block).
- ``rescale_timesteps`` (improved-diffusion): the model was trained on t * 1000 / T, which the
  positional embedding cannot express; the converted UNet uses ``time_embedding_type="learned"`` whose
  table holds exactly ADM's embedding of t * 1000 / T for every integer t (DDS only uses integer t).

Not expressible, so refused with a clear error: class-conditional models, channel_mult[0] != 1,
``conv_resample=False``, unequal attention head dimensions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ddsx.denoisers.adm.config import ADMConfig, adm_preset
from ddsx.denoisers.adm.keys import convert_module, module_maps
from ddsx.denoisers.folder import save_diffusers_folder
from ddsx.utils.logging import get_logger

log = get_logger(__name__)


def adm_timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """OpenAI's ``timestep_embedding`` (float32): (N,) -> (N, dim) = [cos(t f_i) | sin(t f_i)]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def unet_config(cfg: ADMConfig) -> dict[str, Any]:
    """The ``UNet2DModel`` constructor arguments equivalent to ``cfg`` (ValueError if none exist)."""
    channels = cfg.level_channels
    if cfg.channel_mult and cfg.channel_mult[0] != 1:
        raise ValueError(
            f"channel_mult[0] must be 1 (got {cfg.channel_mult[0]}): UNet2DModel ties the timestep embedding width "
            "to the first level's channels"
        )
    if not cfg.conv_resample:
        raise ValueError(
            "conv_resample=False is not supported: UNet2DModel always resamples with convolutions"
        )
    head_dims = {ch // cfg.heads_for(ch, up) for ch, up in _attention_layers(cfg)}
    if len(head_dims) != 1:
        raise ValueError(
            f"the attention layers of this ADM config have different head dimensions {sorted(head_dims)}; "
            "UNet2DModel has a single attention_head_dim (set num_head_channels, or heads that divide evenly)"
        )
    attn = [cfg.level_has_attention(level) for level in range(len(channels))]
    down_plain = "ResnetDownsampleBlock2D" if cfg.resblock_updown else "DownBlock2D"
    up_plain = "ResnetUpsampleBlock2D" if cfg.resblock_updown else "UpBlock2D"
    return dict(
        sample_size=cfg.image_size,
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        center_input_sample=False,
        time_embedding_type="learned" if cfg.rescale_timesteps else "positional",
        num_train_timesteps=cfg.diffusion_steps if cfg.rescale_timesteps else None,
        flip_sin_to_cos=True,
        freq_shift=0,
        down_block_types=tuple("AttnDownBlock2D" if a else down_plain for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else up_plain for a in reversed(attn)),
        block_out_channels=tuple(channels),
        layers_per_block=cfg.num_res_blocks,
        mid_block_scale_factor=1,
        downsample_padding=1,
        downsample_type="resnet" if cfg.resblock_updown else "conv",
        upsample_type="resnet" if cfg.resblock_updown else "conv",
        dropout=cfg.dropout,
        act_fn="silu",
        attention_head_dim=head_dims.pop(),
        norm_num_groups=32,
        attn_norm_num_groups=32,
        norm_eps=1e-5,
        resnet_time_scale_shift="scale_shift" if cfg.use_scale_shift_norm else "default",
        add_attention=True,
    )


def scheduler_config(cfg: ADMConfig) -> dict[str, Any]:
    """DDPMScheduler arguments reproducing OpenAI's ``get_named_beta_schedule`` for ``cfg``."""
    common = dict(
        num_train_timesteps=cfg.diffusion_steps,
        variance_type="learned_range" if cfg.learn_sigma else "fixed_large",
        clip_sample=True,
        prediction_type="epsilon",
    )
    if cfg.noise_schedule == "cosine":
        return dict(beta_schedule="squaredcos_cap_v2", **common)
    scale = 1000 / cfg.diffusion_steps  # OpenAI scales the linear schedule so any T spans the same range
    return dict(beta_schedule="linear", beta_start=scale * 0.0001, beta_end=scale * 0.02, **common)


def _attention_layers(cfg: ADMConfig) -> list[tuple[int, bool]]:
    """(channels, is_upsampling_path) of every attention layer, mid block included."""
    layers = [(cfg.level_channels[-1], False)]
    for level, ch in enumerate(cfg.level_channels):
        if cfg.level_has_attention(level):
            layers += [(ch, False)] * cfg.num_res_blocks + [(ch, True)] * (cfg.num_res_blocks + 1)
    return layers


def convert_adm_state_dict(state_dict: dict[str, torch.Tensor], cfg: ADMConfig) -> torch.nn.Module:
    """A ``UNet2DModel`` (eval, float32) computing exactly what ADM ``cfg`` with ``state_dict`` computes.

    Raises ValueError naming the keys when the checkpoint does not match ``cfg`` (wrong architecture).
    """
    from diffusers import UNet2DModel

    state_dict = _strip_prefix(state_dict)
    if "label_emb.weight" in state_dict:
        raise ValueError(
            "this ADM checkpoint is class-conditional (label_emb.weight); DDS needs an unconditional model"
        )
    unet = UNet2DModel(**unet_config(cfg))
    converted: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for m in module_maps(cfg):
        params = {k[len(m.adm) + 1 :]: v for k, v in state_dict.items() if k.startswith(m.adm + ".")}
        used.update(f"{m.adm}.{k}" for k in params)
        try:
            converted.update(convert_module(m, params, cfg.use_new_attention_order))
        except KeyError as err:
            raise ValueError(
                f"the ADM checkpoint does not match the {cfg.family} config (wrong architecture): unexpected "
                f"checkpoint key {err} where the config expects a {m.kind} ({m.adm})"
            ) from err
    if cfg.rescale_timesteps:
        steps = torch.arange(cfg.diffusion_steps, dtype=torch.float32) * (1000.0 / cfg.diffusion_steps)
        converted["time_proj.weight"] = adm_timestep_embedding(steps, cfg.model_channels)
    unexpected = sorted(set(state_dict) - used)
    expected = unet.state_dict()
    missing = sorted(set(expected) - set(converted))
    if unexpected or missing:
        raise ValueError(
            f"the ADM checkpoint does not match the {cfg.family} config (wrong architecture): "
            f"{len(unexpected)} unexpected checkpoint keys {unexpected[:8]}, "
            f"{len(missing)} model parameters without a checkpoint value {missing[:8]}. "
            "Check image_size, model_channels, num_res_blocks, channel_mult, attention_resolutions, resblock_updown."
        )
    shapes = [
        f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in converted.items()
        if v.shape != expected[k].shape
    ]
    if shapes:
        raise ValueError(
            f"the ADM checkpoint's shapes do not match the {cfg.family} config (wrong architecture): {shapes[:8]}"
        )
    unet.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True)
    return unet.eval()


def load_adm_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """An OpenAI checkpoint (.pt via ``torch.load(weights_only=True)``, or .safetensors) as a state dict."""
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"ADM checkpoint {path} not found: give convert.src the OpenAI .pt file, e.g. "
            "cifar10_uncond_50M_500K.pt (improved-diffusion) or 256x256_diffusion_uncond.pt (guided-diffusion)"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickles with code objects are refused by weights_only
        raise ValueError(f"{path} could not be loaded safely (torch.load weights_only=True): {err}") from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (an OpenAI ADM checkpoint is one)")
    return obj


def convert_adm_checkpoint(
    src: str | Path, dst: str | Path, family: str = "improved", overrides: dict[str, Any] | None = None
) -> Path:
    """Convert OpenAI checkpoint ``src`` of ``family`` (with config ``overrides``) into diffusers folder ``dst``."""
    cfg = adm_preset(family, overrides)
    unet = convert_adm_state_dict(load_adm_state_dict(src), cfg)
    from diffusers import DDPMScheduler

    out = save_diffusers_folder(
        unet,
        DDPMScheduler(**scheduler_config(cfg)),
        dst,
        metadata={"converted_from": str(src), "adm_config": cfg.as_dict()},
    )
    log.info("converted %s (%s) -> %s", src, family, out)
    return out


def _strip_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Checkpoints saved from DistributedDataParallel prefix every key with "module.".
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)
