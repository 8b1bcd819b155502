"""Where every OpenAI ADM module lands in a diffusers ``UNet2DModel`` (module prefixes, then parameters).

ADM (OpenAI ``unet.py``)                           diffusers ``UNet2DModel``
  time_embed.0 / .2                                  time_embedding.linear_1 / linear_2
  input_blocks.0.0                                   conv_in
  input_blocks.k.0 (ResBlock), .k.1 (attention)      down_blocks.l.resnets.r, down_blocks.l.attentions.r
  input_blocks.k.0 (Downsample conv / ResBlock down) down_blocks.l.downsamplers.0
  middle_block.0 / .1 / .2                           mid_block.resnets.0 / attentions.0 / resnets.1
  output_blocks.k.0 / .1 / last (Upsample)           up_blocks.j.resnets.i / attentions.i / upsamplers.0
  out.0 / out.2                                      conv_norm_out / conv_out
ResBlock: in_layers.0 norm1, in_layers.2 conv1, emb_layers.1 time_emb_proj, out_layers.0 norm2,
out_layers.3 conv2, skip_connection conv_shortcut. Attention: norm group_norm, qkv (one 1-D conv)
split into to_q / to_k / to_v, proj_out to_out.0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ddsx.denoisers.adm.config import ADMConfig

RESBLOCK_PARAMS = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}


@dataclass(frozen=True)
class ModuleMap:
    """One ADM module (prefix) -> one diffusers module (prefix); kind says how its parameters map."""

    adm: str
    diffusers: str
    kind: str  # "plain" | "resblock" | "attention" | "downsample" | "upsample"
    heads: int = 1


def module_maps(cfg: ADMConfig) -> list[ModuleMap]:
    """Every parameter-holding ADM module of ``cfg``, in OpenAI's construction order."""
    maps = [
        ModuleMap("time_embed.0", "time_embedding.linear_1", "plain"),
        ModuleMap("time_embed.2", "time_embedding.linear_2", "plain"),
        ModuleMap("input_blocks.0.0", "conv_in", "plain"),
    ]
    channels = cfg.level_channels
    last = len(channels) - 1
    k = 1
    for level, ch in enumerate(channels):
        for r in range(cfg.num_res_blocks):
            maps.append(ModuleMap(f"input_blocks.{k}.0", f"down_blocks.{level}.resnets.{r}", "resblock"))
            if cfg.level_has_attention(level):
                heads = cfg.heads_for(ch)
                maps.append(
                    ModuleMap(
                        f"input_blocks.{k}.1", f"down_blocks.{level}.attentions.{r}", "attention", heads
                    )
                )
            k += 1
        if level != last:
            kind = "resblock" if cfg.resblock_updown else "downsample"
            maps.append(ModuleMap(f"input_blocks.{k}.0", f"down_blocks.{level}.downsamplers.0", kind))
            k += 1
    mid = channels[-1]
    maps += [
        ModuleMap("middle_block.0", "mid_block.resnets.0", "resblock"),
        ModuleMap("middle_block.1", "mid_block.attentions.0", "attention", cfg.heads_for(mid)),
        ModuleMap("middle_block.2", "mid_block.resnets.1", "resblock"),
    ]
    k = 0
    for j, level in enumerate(reversed(range(len(channels)))):
        ch = channels[level]
        for i in range(cfg.num_res_blocks + 1):
            maps.append(ModuleMap(f"output_blocks.{k}.0", f"up_blocks.{j}.resnets.{i}", "resblock"))
            layer = 1
            if cfg.level_has_attention(level):
                heads = cfg.heads_for(ch, upsampling=True)
                maps.append(
                    ModuleMap(f"output_blocks.{k}.1", f"up_blocks.{j}.attentions.{i}", "attention", heads)
                )
                layer = 2
            if level and i == cfg.num_res_blocks:
                kind = "resblock" if cfg.resblock_updown else "upsample"
                maps.append(ModuleMap(f"output_blocks.{k}.{layer}", f"up_blocks.{j}.upsamplers.0", kind))
            k += 1
    maps += [ModuleMap("out.0", "conv_norm_out", "plain"), ModuleMap("out.2", "conv_out", "plain")]
    return maps


def split_qkv(
    tensor: torch.Tensor, heads: int, new_order: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ADM's fused qkv 1-D conv weight (3C, C, 1) or bias (3C,) -> q, k, v as (C, C) / (C,).

    Legacy order (``QKVAttentionLegacy``, both presets): channels are [head][q|k|v][ch]; the new order
    (``use_new_attention_order``) is [q|k|v][head][ch]. diffusers wants each of q, k, v as [head][ch].
    """
    t = tensor.reshape(tensor.shape[0], -1) if tensor.dim() > 1 else tensor[:, None]
    width = t.shape[0] // 3
    ch = width // heads
    if new_order:
        q, k, v = t.reshape(3, width, -1).unbind(0)
    else:
        q, k, v = t.reshape(heads, 3, ch, -1).permute(1, 0, 2, 3).reshape(3, width, -1).unbind(0)
    if tensor.dim() == 1:
        return q[:, 0], k[:, 0], v[:, 0]
    return q, k, v


def convert_module(
    m: ModuleMap, params: dict[str, torch.Tensor], new_attention_order: bool
) -> dict[str, torch.Tensor]:
    """The parameters of one ADM module (names relative to ``m.adm``) under diffusers names."""
    out: dict[str, torch.Tensor] = {}
    for name, value in params.items():
        sub, _, leaf = name.rpartition(".")  # e.g. "in_layers.0", "weight"
        if m.kind == "plain":
            out[f"{m.diffusers}.{name}"] = value
        elif m.kind == "resblock":
            if sub not in RESBLOCK_PARAMS:
                raise KeyError(f"{m.adm}.{name}")
            out[f"{m.diffusers}.{RESBLOCK_PARAMS[sub]}.{leaf}"] = value
        elif m.kind in ("downsample", "upsample"):
            # Downsample's conv is named "op", Upsample's "conv"; diffusers calls both "conv".
            if sub not in ("op", "conv"):
                raise KeyError(f"{m.adm}.{name}")
            out[f"{m.diffusers}.conv.{leaf}"] = value
        elif m.kind == "attention":
            if sub == "norm":
                out[f"{m.diffusers}.group_norm.{leaf}"] = value
            elif sub == "qkv":
                for key, part in zip(
                    ("to_q", "to_k", "to_v"), split_qkv(value, m.heads, new_attention_order), strict=True
                ):
                    out[f"{m.diffusers}.{key}.{leaf}"] = part.contiguous()
            elif sub == "proj_out":
                out[f"{m.diffusers}.to_out.0.{leaf}"] = (
                    value.reshape(value.shape[0], -1) if leaf == "weight" else value
                )
            else:
                raise KeyError(f"{m.adm}.{name}")
    return out
