"""An independent, test-only re-implementation of OpenAI's ADM UNet (improved- and guided-diffusion).

Written from the published architecture (Nichol & Dhariwal 2021, Dhariwal & Nichol 2021) with
OpenAI's parameter names, so an OpenAI state dict loads into it unchanged. It shares no code with
ddsx's converter, which targets diffusers' UNet2DModel; the test also checks it against the
``guided-diffusion-sdk`` package (OpenAI's code) when that is installed.

improved-diffusion's UNet is guided-diffusion's with resblock_updown=False, num_head_channels=-1 and
the legacy attention order (same parameter names), so one reference serves both families.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[cos(t w_i), sin(t w_i)] with w_i = 10000^(-i / (dim/2)), i < dim/2."""
    half = dim // 2
    w = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    angle = t.float()[:, None] * w[None, :]
    return torch.cat([angle.cos(), angle.sin()], dim=1)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, scale_shift: bool, resample: str | None = None):
        super().__init__()
        self.scale_shift, self.resample = scale_shift, resample
        self.in_layers = nn.Sequential(group_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, 2 * cout if scale_shift else cout))
        self.out_layers = nn.Sequential(
            group_norm(cout), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(cout, cout, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # Resampling happens between the activation and the first convolution, for both paths.
        h = self.in_layers[2](self._resample(self.in_layers[1](self.in_layers[0](x))))
        x = self._resample(x)
        e = self.emb_layers(emb)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class Attention(nn.Module):
    def __init__(self, channels: int, heads: int, new_order: bool):
        super().__init__()
        self.heads, self.new_order = heads, new_order
        self.norm = group_norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))  # (b, 3c, n)
        d = c // self.heads
        if self.new_order:  # [q|k|v][head][d]
            q, k, v = (part.reshape(b * self.heads, d, -1) for part in qkv.chunk(3, dim=1))
        else:  # [head][q|k|v][d]
            q, k, v = qkv.reshape(b * self.heads, 3 * d, -1).split(d, dim=1)
        weights = torch.softmax(torch.einsum("bdt,bds->bts", q, k) / math.sqrt(d), dim=-1)
        out = torch.einsum("bts,bds->bdt", weights, v).reshape(b, c, -1)
        return (flat + self.proj_out(out)).reshape(b, c, hgt, wid)


class Step(nn.ModuleList):
    """OpenAI's TimestepEmbedSequential: its children are named 0, 1, 2 like OpenAI's."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, (ResBlock, Attention)) else layer(x)
        return x


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ReferenceADMUNet(nn.Module):
    """ADM UNet; ``attention_ds`` are downsampling rates (1, 2, 4, ...), as OpenAI's UNetModel takes them."""

    def __init__(
        self,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_ds: tuple[int, ...],
        channel_mult: tuple[int, ...],
        num_heads: int = 1,
        num_head_channels: int = -1,
        scale_shift: bool = True,
        resblock_updown: bool = False,
        new_attention_order: bool = False,
    ):
        super().__init__()
        emb = 4 * model_channels
        self.model_channels = model_channels

        def attn(ch: int) -> Attention:
            heads = ch // num_head_channels if num_head_channels != -1 else num_heads
            return Attention(ch, heads, new_attention_order)

        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.input_blocks = nn.ModuleList([Step([nn.Conv2d(in_channels, model_channels, 3, padding=1)])])
        skips, ch, ds = [model_channels], model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, mult * model_channels, emb, scale_shift)]
                ch = mult * model_channels
                if ds in attention_ds:
                    layers.append(attn(ch))
                self.input_blocks.append(Step(layers))
                skips.append(ch)
            if level < len(channel_mult) - 1:
                down = ResBlock(ch, ch, emb, scale_shift, "down") if resblock_updown else Downsample(ch)
                self.input_blocks.append(Step([down]))
                skips.append(ch)
                ds *= 2
        self.middle_block = Step(
            [ResBlock(ch, ch, emb, scale_shift), attn(ch), ResBlock(ch, ch, emb, scale_shift)]
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), mult * model_channels, emb, scale_shift)]
                ch = mult * model_channels
                if ds in attention_ds:
                    layers.append(attn(ch))
                if level > 0 and i == num_res_blocks:
                    layers.append(
                        ResBlock(ch, ch, emb, scale_shift, "up") if resblock_updown else Upsample(ch)
                    )
                    ds //= 2
                self.output_blocks.append(Step(layers))
        self.out = nn.Sequential(
            group_norm(ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(sinusoid(t, self.model_channels))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)
