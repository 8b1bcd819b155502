"""OpenAI ADM -> diffusers conversion: numerical equivalence against references of the original UNet.

Two independent references of the original architecture, never the converter itself:
- ``guided_diffusion.unet.UNetModel`` from the PyPI sdist ``guided-diffusion-sdk==1.0.0`` (OpenAI's
  guided-diffusion code, repackaged; test-only dependency, the tests that need it skip without it).
  improved-diffusion's UNet is the same module with resblock_updown=False, num_head_channels=-1 and
  the legacy attention order (identical parameter names), so it stands in for improved-diffusion too.
- ``tests/adm_reference``: a from-scratch re-implementation, itself checked against the sdk when present.
Weights are random (OpenAI zero-initialises output convolutions, which would make outputs trivially 0).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from ddsx.denoisers.adm import adm_preset, convert_adm_checkpoint, convert_adm_state_dict
from ddsx.denoisers.adm.convert import load_adm_state_dict
from ddsx.denoisers.load import load_diffusers_denoiser
from tests.adm_reference.unet import ReferenceADMUNet

# Small configs of each family: seconds on a CPU, yet every structural feature of the presets.
SMALL = {
    # improved-diffusion: conv up/down-sampling, fixed number of heads, rescaled timesteps (T = 40).
    "improved": dict(
        image_size=16,
        model_channels=32,
        num_res_blocks=2,
        channel_mult=(1, 2),
        attention_resolutions=(8,),
        num_heads=2,
        diffusion_steps=40,
    ),
    # guided-diffusion: residual up/down-sampling blocks, 32 channels per head, linear schedule.
    "guided": dict(
        image_size=16,
        model_channels=32,
        num_res_blocks=1,
        channel_mult=(1, 1, 2),
        attention_resolutions=(8, 4),
        num_head_channels=32,
        diffusion_steps=50,
    ),
    "guided_new_order": dict(
        image_size=16,
        model_channels=32,
        num_res_blocks=1,
        channel_mult=(1, 2),
        attention_resolutions=(16, 8),
        num_head_channels=16,
        use_new_attention_order=True,
        diffusion_steps=50,
    ),
}


def _family(name: str) -> str:
    return name.split("_")[0]


def _openai_unet(cfg):
    """OpenAI's own UNetModel (guided-diffusion-sdk) for an ADMConfig; skips if not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from guided_diffusion.unet import UNetModel
    except ImportError:
        pytest.skip(
            "guided-diffusion-sdk not installed (test-only oracle: pip install guided-diffusion-sdk==1.0.0)"
        )
    return UNetModel(
        image_size=cfg.image_size,
        in_channels=cfg.in_channels,
        model_channels=cfg.model_channels,
        out_channels=cfg.out_channels,
        num_res_blocks=cfg.num_res_blocks,
        attention_resolutions=tuple(cfg.attention_ds),
        channel_mult=cfg.channel_mult,
        num_heads=cfg.num_heads,
        num_head_channels=cfg.num_head_channels,
        use_scale_shift_norm=cfg.use_scale_shift_norm,
        resblock_updown=cfg.resblock_updown,
        use_new_attention_order=cfg.use_new_attention_order,
    )


def _local_unet(cfg):
    return ReferenceADMUNet(
        cfg.in_channels,
        cfg.model_channels,
        cfg.out_channels,
        cfg.num_res_blocks,
        tuple(cfg.attention_ds),
        tuple(int(m) for m in cfg.channel_mult),
        cfg.num_heads,
        cfg.num_head_channels,
        cfg.use_scale_shift_norm,
        cfg.resblock_updown,
        cfg.use_new_attention_order,
    )


REFERENCES = {"openai": _openai_unet, "local": _local_unet}


def _randomised(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval()


def _model_time(cfg, t):
    """What the original diffusion feeds the UNet: t * 1000 / T when rescale_timesteps (improved)."""
    return t.float() * (1000.0 / cfg.diffusion_steps) if cfg.rescale_timesteps else t


@pytest.mark.parametrize("reference", sorted(REFERENCES))
@pytest.mark.parametrize("name", sorted(SMALL))
def test_converted_unet_matches_original(name, reference):
    cfg = adm_preset(_family(name), SMALL[name])
    original = _randomised(REFERENCES[reference](cfg))
    unet = convert_adm_state_dict(original.state_dict(), cfg)
    x = torch.randn(2, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, cfg.diffusion_steps - 1])
    with torch.no_grad():
        expected = original(x, _model_time(cfg, t))
        actual = unet(x, t).sample
    assert expected.shape == actual.shape == (2, 6, cfg.image_size, cfg.image_size)
    assert expected.abs().mean() > 0.05  # a real signal, not zero-initialised output layers
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_local_reference_matches_openai_code(name):
    """The from-scratch reference is the same function as OpenAI's code (so it is a sound oracle)."""
    cfg = adm_preset(_family(name), SMALL[name])
    openai = _randomised(_openai_unet(cfg))
    local = _local_unet(cfg).eval()
    local.load_state_dict(openai.state_dict(), strict=True)  # same parameter names and shapes
    x, t = torch.randn(2, 3, cfg.image_size, cfg.image_size), torch.tensor([3.0, 17.5])
    with torch.no_grad():
        torch.testing.assert_close(local(x, t), openai(x, t), rtol=1e-4, atol=1e-5)


def test_presets_are_the_published_checkpoints():
    improved, guided = adm_preset("improved"), adm_preset("guided")
    assert improved.channel_mult == (1, 2, 2, 2) and improved.attention_ds == {2, 4}
    assert (improved.diffusion_steps, improved.noise_schedule, improved.rescale_timesteps) == (
        4000,
        "cosine",
        True,
    )
    assert guided.channel_mult == (1, 1, 2, 2, 4, 4) and guided.attention_ds == {8, 16, 32}
    assert (guided.diffusion_steps, guided.noise_schedule, guided.resblock_updown) == (1000, "linear", True)
    assert improved.out_channels == guided.out_channels == 6  # learned sigma


def test_checkpoint_file_to_denoiser_folder(tmp_path):
    """A .pt on disk -> diffusers folder -> DDS denoiser whose UNet and schedule are the original's."""
    cfg = adm_preset("improved", SMALL["improved"])
    original = _randomised(_local_unet(cfg), seed=3)
    src = tmp_path / "adm.pt"
    torch.save(original.state_dict(), src)
    dst = convert_adm_checkpoint(src, tmp_path / "converted", "improved", SMALL["improved"])
    assert (dst / "model_index.json").is_file() and (
        dst / "unet" / "diffusion_pytorch_model.safetensors"
    ).is_file()
    denoiser = load_diffusers_denoiser(dst, sigma=0.25)
    # improved-diffusion's cosine schedule telescopes: abar_t = f((t+1)/T) / f(0), f(u) = cos((u+s)/(1+s) pi/2)^2
    T, s = cfg.diffusion_steps, 0.008
    f = [math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2 for u in range(T + 1)]
    expected_abar = torch.tensor([f[t + 1] / f[0] for t in range(T)], dtype=torch.float64)
    expected_abar[-1] = expected_abar[-2] * (1 - 0.999)  # the last beta is capped at 0.999
    torch.testing.assert_close(denoiser.alphas_cumprod, expected_abar, rtol=1e-9, atol=1e-12)
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([denoiser.t_star])
    with torch.no_grad():
        torch.testing.assert_close(
            denoiser.unet(x, t).sample, original(x, _model_time(cfg, t)), rtol=1e-4, atol=1e-5
        )
        out = denoiser(torch.rand(2, 3, 16, 16))
    assert out.shape == (2, 3, 16, 16) and 0 <= out.min() and out.max() <= 1


def test_wrong_architecture_names_the_keys():
    cfg = adm_preset("improved", SMALL["improved"])
    state = _randomised(_local_unet(cfg)).state_dict()
    with pytest.raises(ValueError, match="wrong architecture.*unexpected checkpoint key"):
        convert_adm_state_dict(state, adm_preset("improved", {**SMALL["improved"], "num_res_blocks": 1}))
    with pytest.raises(ValueError, match="shapes do not match.*wrong architecture"):
        convert_adm_state_dict(state, adm_preset("improved", {**SMALL["improved"], "channel_mult": (1, 3)}))
    with pytest.raises(ValueError, match="class-conditional"):
        convert_adm_state_dict({**state, "label_emb.weight": torch.zeros(10, 128)}, cfg)


def test_unexpressible_configs_and_bad_inputs_fail_clearly(tmp_path):
    # 4 heads everywhere but 32 and 64 channels: head dims 8 and 16 cannot share one attention_head_dim.
    uneven = adm_preset("improved", {**SMALL["improved"], "attention_resolutions": (16, 8), "num_heads": 4})
    with pytest.raises(ValueError, match="head dimensions"):
        convert_adm_state_dict({}, uneven)
    with pytest.raises(FileNotFoundError, match="convert.src"):
        load_adm_state_dict(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="family"):
        adm_preset("stable", {})
    with pytest.raises(ValueError, match="unknown ADM config fields"):
        adm_preset("guided", {"num_channel": 3})


@pytest.mark.slow
def test_full_improved_cifar10_architecture_matches_openai():
    """The real cifar10_uncond_50M_500K architecture (52M parameters), random weights."""
    cfg = adm_preset("improved")
    original = _randomised(_openai_unet(cfg))
    unet = convert_adm_state_dict(original.state_dict(), cfg)
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([1234])
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t).sample, original(x, _model_time(cfg, t)), rtol=1e-4, atol=1e-5)
