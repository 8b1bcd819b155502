"""The hyperparameters of an OpenAI ADM UNet + diffusion, with presets for the checkpoints DDS uses.

Field names and meanings follow OpenAI's ``script_util.py`` flags. Presets:

- ``improved``: improved-diffusion ``cifar10_uncond_50M_500K.pt`` (Nichol & Dhariwal 2021): 32x32,
  128 channels, 3 res blocks, channel_mult (1,2,2,2), attention at 16 and 8, 4 heads, scale-shift norm,
  learned sigma, 4,000-step cosine schedule, ``rescale_timesteps=True`` (the model sees t * 1000 / T).
- ``guided``: guided-diffusion ``256x256_diffusion_uncond.pt`` (Dhariwal & Nichol 2021): 256x256,
  256 channels, 2 res blocks, channel_mult (1,1,2,2,4,4), attention at 32, 16 and 8 with 64 channels
  per head, residual up/down-sampling blocks, scale-shift norm, learned sigma, 1,000-step linear schedule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FAMILIES = ("improved", "guided")
NOISE_SCHEDULES = ("linear", "cosine")

# OpenAI's default channel multipliers by image size (guided-diffusion extends improved-diffusion's).
_DEFAULT_CHANNEL_MULT = {
    "improved": {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)},
    "guided": {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)},
}


@dataclass
class ADMConfig:
    """One ADM model + diffusion. ``attention_resolutions`` are resolutions (16 = the 16x16 feature map),
    as in OpenAI's ``--attention_resolutions 16,8`` flag."""

    family: str = "improved"
    image_size: int = 32
    in_channels: int = 3
    model_channels: int = 128
    num_res_blocks: int = 3
    channel_mult: tuple[float, ...] | None = None
    attention_resolutions: tuple[int, ...] = (16, 8)
    num_heads: int = 4
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    use_new_attention_order: bool = False
    conv_resample: bool = True
    learn_sigma: bool = True
    dropout: float = 0.0
    diffusion_steps: int = 4000
    noise_schedule: str = "cosine"
    rescale_timesteps: bool = True

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"ADM family must be one of {FAMILIES}, got {self.family!r}")
        if self.noise_schedule not in NOISE_SCHEDULES:
            raise ValueError(f"noise_schedule must be one of {NOISE_SCHEDULES}, got {self.noise_schedule!r}")
        if self.channel_mult is None:
            table = _DEFAULT_CHANNEL_MULT[self.family]
            if self.image_size not in table:
                raise ValueError(
                    f"no default channel_mult for a {self.family} model at image_size {self.image_size} "
                    f"(known: {sorted(table)}); give channel_mult explicitly"
                )
            self.channel_mult = table[self.image_size]
        self.channel_mult = tuple(self.channel_mult)
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
        if self.family == "improved" and (
            self.resblock_updown or self.num_head_channels != -1 or self.use_new_attention_order
        ):
            raise ValueError(
                "improved-diffusion UNets have no resblock_updown, num_head_channels or use_new_attention_order; "
                "use family=guided for those options"
            )

    # ----- derived structure ------------------------------------------------------------------
    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def level_channels(self) -> list[int]:
        """Output channels of every level: int(mult * model_channels), as OpenAI computes them."""
        return [int(m * self.model_channels) for m in self.channel_mult or ()]

    @property
    def attention_ds(self) -> set[int]:
        """Downsampling rates with attention: image_size // resolution (OpenAI's conversion)."""
        return {self.image_size // r for r in self.attention_resolutions}

    def level_has_attention(self, level: int) -> bool:
        return 2**level in self.attention_ds

    def heads_for(self, channels: int, upsampling: bool = False) -> int:
        """Attention heads of a layer with ``channels`` channels (OpenAI's AttentionBlock rule)."""
        if self.num_head_channels != -1:
            return channels // self.num_head_channels
        if upsampling and self.num_heads_upsample != -1:
            return self.num_heads_upsample
        return self.num_heads

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    "improved": dict(
        family="improved",
        image_size=32,
        model_channels=128,
        num_res_blocks=3,
        channel_mult=None,
        attention_resolutions=(16, 8),
        num_heads=4,
        num_head_channels=-1,
        use_scale_shift_norm=True,
        resblock_updown=False,
        learn_sigma=True,
        dropout=0.3,
        diffusion_steps=4000,
        noise_schedule="cosine",
        rescale_timesteps=True,
    ),
    "guided": dict(
        family="guided",
        image_size=256,
        model_channels=256,
        num_res_blocks=2,
        channel_mult=None,
        attention_resolutions=(32, 16, 8),
        num_heads=4,
        num_head_channels=64,
        use_scale_shift_norm=True,
        resblock_updown=True,
        use_new_attention_order=False,
        learn_sigma=True,
        dropout=0.0,
        diffusion_steps=1000,
        noise_schedule="linear",
        rescale_timesteps=False,
    ),
}


def adm_preset(family: str, overrides: Mapping[str, Any] | None = None) -> ADMConfig:
    """The preset of ``family`` ("improved" | "guided") with ``overrides`` applied (any ADMConfig field)."""
    if family not in PRESETS:
        raise ValueError(f"ADM family must be one of {tuple(PRESETS)}, got {family!r}")
    values = dict(PRESETS[family])
    unknown = set(overrides or {}) - {f.name for f in dataclasses.fields(ADMConfig)}
    if unknown:
        raise ValueError(
            f"unknown ADM config fields {sorted(unknown)}; known: {[f.name for f in dataclasses.fields(ADMConfig)]}"
        )
    values.update(dict(overrides or {}))
    return ADMConfig(**values)
