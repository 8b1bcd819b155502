"""DiffusionDenoiser: the one-shot DDS formula in closed form, learn_sigma, resolution handling, freezing."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import UNet2DModel
from torch import nn

from ddsx.denoisers.dds import DiffusionDenoiser
from ddsx.denoisers.resolution import crop, fit_to_model, pad_to

T = 1000
BETAS = [1e-4 + i * (0.02 - 1e-4) / (T - 1) for i in range(T)]
ABAR = torch.cumprod(1 - torch.tensor(BETAS, dtype=torch.float64), 0)  # DDPM linear schedule


class OracleUNet(nn.Module):
    """A fake UNet that knows the clean image: returns the exact noise in x_t (or x0 / v), so DDS must
    recover the clean image exactly. Also checks that it is called at the expected timestep."""

    def __init__(
        self,
        clean_model_scale: torch.Tensor,
        mode: str = "epsilon",
        extra_channels: int = 0,
        sample_size: int | None = None,
        expect_t: int | None = None,
    ):
        super().__init__()
        self.clean, self.mode, self.extra, self.expect_t = clean_model_scale, mode, extra_channels, expect_t
        self.dummy = nn.Parameter(torch.zeros(()))  # something to freeze
        self.config = SimpleNamespace(sample_size=sample_size)
        self.calls: list[int] = []

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> SimpleNamespace:
        step = int(t[0])
        self.calls.append(step)
        if self.expect_t is not None:
            assert step == self.expect_t
        a = float(ABAR[step])
        eps = (x_t - math.sqrt(a) * self.clean) / math.sqrt(1 - a)
        out = {
            "epsilon": eps,
            "sample": self.clean,
            "v_prediction": math.sqrt(a) * eps - math.sqrt(1 - a) * self.clean,
        }
        pred = out[self.mode] + 0 * self.dummy
        if self.extra:
            pred = torch.cat([pred, torch.randn(pred.shape[0], self.extra, *pred.shape[2:])], dim=1)
        return SimpleNamespace(sample=pred)


def _batch(n=3, c=1, h=8, w=8, sigma=0.5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=gen)
    return x, x + sigma * torch.randn(n, c, h, w, generator=gen)


@pytest.mark.parametrize("mode", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("num_steps", [1, 4])
def test_true_noise_recovers_the_clean_image(mode, num_steps):
    x, noisy = _batch()
    oracle = OracleUNet(2 * x - 1, mode)
    denoiser = DiffusionDenoiser(oracle, ABAR, 0.5, prediction_type=mode, num_steps=num_steps)
    torch.testing.assert_close(denoiser(noisy), x, rtol=0, atol=1e-5)
    assert oracle.calls[0] == 258 and len(oracle.calls) == num_steps  # t* for sigma 0.5 (hand value)
    assert oracle.calls == sorted(oracle.calls, reverse=True) and oracle.calls[-1] == (
        0 if num_steps > 1 else 258
    )


def test_one_shot_formula_in_closed_form():
    """A constant eps prediction c gives D = clip(((sqrt(a)(2xn-1) - sqrt(1-a) c) / sqrt(a) + 1) / 2)."""
    _, noisy = _batch(sigma=0.25)

    class Constant(OracleUNet):
        def forward(self, x_t, t):
            assert int(t[0]) == 144  # t* for sigma 0.25 on the linear schedule, by hand
            return SimpleNamespace(sample=torch.full_like(x_t, 0.3))

    denoiser = DiffusionDenoiser(Constant(torch.zeros(1)), ABAR, 0.25)
    a = float(ABAR[144])
    x0 = (math.sqrt(a) * (2 * noisy - 1) - math.sqrt(1 - a) * 0.3) / math.sqrt(a)
    expected = (x0.clamp(-1, 1) + 1) / 2
    torch.testing.assert_close(denoiser(noisy), expected, rtol=0, atol=1e-6)
    assert denoiser.describe()["t_star"] == 144
    assert denoiser.describe()["achieved_sigma"] == pytest.approx(math.sqrt((1 - a) / a) / 2)


def test_learn_sigma_uses_the_first_half_of_the_channels():
    x, noisy = _batch(c=3)
    denoiser = DiffusionDenoiser(OracleUNet(2 * x - 1, extra_channels=3), ABAR, 0.5)
    torch.testing.assert_close(denoiser(noisy), x, rtol=0, atol=1e-5)
    odd = DiffusionDenoiser(OracleUNet(2 * x - 1, extra_channels=2), ABAR, 0.5)
    with pytest.raises(ValueError, match="5 channels for a 3-channel input"):
        odd(noisy)


@pytest.mark.parametrize("pad_mode", ["reflect", "replicate", "constant"])
def test_pad_to_model_size_and_crop_back(pad_mode):
    """28x28 MNIST into a 32x32 model: padded (noise and all), denoised, cropped back exactly."""
    x, noisy = _batch(h=28, w=28)
    clean_padded, _ = pad_to(2 * x - 1, (32, 32), pad_mode, value=-1.0)  # what the model would see, clean
    oracle = OracleUNet(clean_padded, sample_size=32)
    denoiser = DiffusionDenoiser(oracle, ABAR, 0.5, resolution="pad", pad_mode=pad_mode, pad_value=0.0)
    out = denoiser(noisy)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)


def test_resolution_helpers_round_trip():
    x = torch.rand(2, 3, 28, 30)
    padded, pads = pad_to(x, (32, 32), "reflect")
    assert padded.shape[-2:] == (32, 32) and pads == (1, 1, 2, 2)
    torch.testing.assert_close(crop(padded, pads), x, rtol=0, atol=0)
    fitted, undo = fit_to_model(x, (32, 32), "pad")
    torch.testing.assert_close(undo(fitted), x, rtol=0, atol=0)
    fitted, undo = fit_to_model(x, (56, 60), "resize", interpolation="nearest")
    assert fitted.shape[-2:] == (56, 60)
    torch.testing.assert_close(undo(fitted), x, rtol=0, atol=0)  # nearest 2x up then down is exact
    with pytest.raises(ValueError, match="only pads smaller images"):
        fit_to_model(torch.rand(1, 1, 40, 40), (32, 32), "pad")
    with pytest.raises(ValueError, match="resolution must be one of"):
        fit_to_model(x, (32, 32), "tile")  # type: ignore[arg-type]


def _tiny_unet(channels=1, out=None, size=8) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=out or channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
    )


def test_resize_mode_and_output_size_with_a_real_unet():
    denoiser = DiffusionDenoiser(_tiny_unet(3, 6), ABAR, 0.25)  # learn_sigma layout, model at 8x8
    x = torch.rand(2, 3, 12, 10)
    out = denoiser(x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    sized = DiffusionDenoiser(_tiny_unet(3, 6), ABAR, 0.25, output_size=16)
    assert sized(x).shape == (2, 3, 16, 16)


def test_frozen_yet_differentiable_with_respect_to_the_input():
    denoiser = DiffusionDenoiser(_tiny_unet(), ABAR, 0.5)
    parent = nn.Sequential(denoiser, nn.Conv2d(1, 1, 1))
    parent.train()  # what Lightning does every epoch
    assert not denoiser.training and not denoiser.unet.training
    assert all(not p.requires_grad for p in denoiser.parameters())
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    denoiser(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in denoiser.parameters())


def test_activation_checkpointing_recomputes_the_unet_and_keeps_the_gradient():
    calls = []
    grads = {}
    for checkpointing in (False, True):
        denoiser = DiffusionDenoiser(_tiny_unet(), ABAR, 0.5, num_steps=2, checkpointing=checkpointing)
        # A pre-hook: the recomputation stops early, once it has what the backward needs.
        denoiser.unet.register_forward_pre_hook(lambda *_, flag=checkpointing: calls.append(flag))
        x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3), requires_grad=True)
        out = denoiser(x)
        out.square().sum().backward()
        grads[checkpointing] = (out.detach(), x.grad)
    # Two DDIM model calls each way; checkpointing recomputes both in the backward pass.
    assert calls.count(False) == 2 and calls.count(True) == 4
    torch.testing.assert_close(grads[True][0], grads[False][0])
    torch.testing.assert_close(grads[True][1], grads[False][1])
    with torch.no_grad():  # no gradient wanted: no recomputation either
        denoiser(torch.rand(2, 1, 8, 8))
    assert calls.count(True) == 6  # two model calls, none repeated


def test_dtype_and_device_follow_the_input():
    denoiser = DiffusionDenoiser(_tiny_unet(), ABAR, 0.5)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    out = denoiser(x)
    assert out.dtype == torch.float64 and out.device == x.device
    denoiser.to(torch.float64)
    torch.testing.assert_close(denoiser(x), out, rtol=1e-4, atol=1e-5)
    assert denoiser.alphas_cumprod.dtype == torch.float64  # the schedule never degrades with the module


def test_set_sigma_retunes_and_bad_sigma_fails():
    denoiser = DiffusionDenoiser(_tiny_unet(), ABAR, 0.25)
    assert denoiser.t_star == 144
    denoiser.set_sigma(1.0)
    assert (denoiser.t_star, denoiser.sigma) == (396, 1.0)
    with pytest.raises(ValueError, match="beyond"):
        denoiser.set_sigma(1000.0)
    assert denoiser.t_star == 396  # unchanged after the failed retune
    with pytest.raises(ValueError, match="beyond"):
        DiffusionDenoiser(_tiny_unet(), ABAR[:50], 0.5)
    with pytest.raises(ValueError, match="prediction_type"):
        DiffusionDenoiser(_tiny_unet(), ABAR, 0.5, prediction_type="noise")  # type: ignore[arg-type]


def test_t_star_rule_is_applied_on_retune_and_recorded():
    nearest = DiffusionDenoiser(_tiny_unet(), ABAR, 0.25)
    at_least = DiffusionDenoiser(_tiny_unet(), ABAR, 0.25, t_star_rule="at_least")
    levels = torch.sqrt((1 - ABAR) / ABAR)
    for sigma in (0.25, 0.5, 1.0):
        nearest.set_sigma(sigma)
        at_least.set_sigma(sigma)
        first = int(torch.nonzero(levels >= 2 * sigma)[0, 0])
        assert at_least.t_star == first and levels[first - 1] < 2 * sigma
        assert nearest.t_star == int(torch.argmin((levels - 2 * sigma).abs()))
        assert (
            at_least.describe()["t_star_rule"] == "at_least"
            and nearest.describe()["t_star_rule"] == "nearest"
        )
        assert at_least.describe()["t_star"] == at_least.t_star
    assert any(
        DiffusionDenoiser(_tiny_unet(), ABAR, s, t_star_rule="at_least").t_star != nearest.t_star
        for s in (0.1, 0.2, 0.3)
        if nearest.set_sigma(s) is None
    ), "the two rules must differ somewhere on this schedule"
    with pytest.raises(ValueError, match="t_star_rule"):
        DiffusionDenoiser(_tiny_unet(), ABAR, 0.25, t_star_rule="round")


def test_auto_resolution_pads_smaller_inputs_and_resizes_larger_ones():
    from ddsx.denoisers.resolution import fit_to_model

    small = torch.randn(2, 1, 28, 28)
    padded, undo = fit_to_model(small, (32, 32), "auto")
    # Reflect padding copies noisy pixels: the noise keeps its level, and cropping gives x back exactly.
    assert padded.shape[-2:] == (32, 32) and torch.equal(undo(padded), small)
    assert torch.equal(padded[..., 2:30, 2:30], small)
    large = torch.rand(2, 1, 40, 40)
    resized, undo = fit_to_model(large, (32, 32), "auto")
    assert resized.shape[-2:] == (32, 32) and undo(resized).shape[-2:] == (40, 40)
