"""ddsx-denoiser: DDPM training wiring (Hydra app -> LightningModule), EMA, resume, saved folder, convert mode."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel
from hydra.core.global_hydra import GlobalHydra

from ddsx.cli.denoiser import build_denoiser_training, run
from ddsx.cli.errors import DDSXError
from ddsx.denoisers.ddpm_module import DDPMModule
from ddsx.denoisers.dds import DiffusionDenoiser
from ddsx.denoisers.load import load_diffusers_denoiser
from tests.adm_reference.unet import ReferenceADMUNet
from tests.conftest import compose_config

# A 2-level UNet on the 8x8 sklearn digits: the whole app runs in seconds.
TINY = [
    "dataset=digits",
    "denoiser_model.block_out_channels=[8,16]",
    "denoiser_model.down_block_types=[DownBlock2D,DownBlock2D]",
    "denoiser_model.up_block_types=[UpBlock2D,UpBlock2D]",
    "denoiser_model.norm_num_groups=4",
    "denoiser_model.attention_head_dim=8",
    "module.num_samples=4",
    "module.sample_steps=2",
    "logger=none",
]


@pytest.fixture
def compose_denoiser(tmp_path: Path):
    def _compose(*overrides: str):
        return compose_config(
            "ddsx_denoiser", [f"paths.root_dir={tmp_path}", *TINY, *overrides], tmp_path / "run"
        )

    yield _compose
    GlobalHydra.instance().clear()


def test_fast_dev_run_saves_a_loadable_denoiser(compose_denoiser, tmp_path):
    cfg = compose_denoiser("debug=fast_dev_run")
    metrics = run(cfg)
    assert metrics["train/loss_step"] > 0 and metrics["val/l2_ratio@0.5"] > 0
    # A smoke run never overwrites the real save_dir: it goes to the run folder.
    saved = Path(metrics["save_dir"])
    assert saved == tmp_path / "run" / "denoiser" and not Path(cfg.save_dir).exists()
    assert (tmp_path / "run" / "samples" / "samples_epoch000.png").is_file()
    denoiser = load_diffusers_denoiser(saved, sigma=0.5)
    assert isinstance(denoiser, DiffusionDenoiser) and denoiser.unet.config.sample_size == 8
    out = denoiser(torch.rand(3, 1, 8, 8))
    assert out.shape == (3, 1, 8, 8) and 0 <= out.min() and out.max() <= 1


def test_training_at_another_resolution_than_the_data(compose_denoiser):
    """module.image_size resizes for the UNet; validation must still compare at the data's size."""
    metrics = run(compose_denoiser("debug=fast_dev_run", "module.image_size=16"))
    assert metrics["val/loss"] > 0 and 0 < metrics["val/l2_ratio@0.5"]


def test_resume_restores_weights_and_ema(compose_denoiser, tmp_path):
    short = ["debug=limit", "module.num_samples=0", "save_dir=" + str(tmp_path / "ddpm")]
    datamodule, module, trainer = build_denoiser_training(compose_denoiser(*short, "trainer.max_epochs=1"))
    trainer.fit(module, datamodule=datamodule)
    steps = trainer.global_step
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    ema_keys = [k for k in state if k.startswith("ema_unet.")]
    assert ema_keys and any(k.startswith("unet.") for k in state)
    # Resuming a finished run trains nothing: the module holds exactly the saved live and EMA weights.
    datamodule, restored, trainer = build_denoiser_training(compose_denoiser(*short, "trainer.max_epochs=1"))
    trainer.fit(restored, datamodule=datamodule, ckpt_path=str(ckpt))
    for key, value in restored.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    # Resuming with more epochs continues the step count, and the EMA's warm-up counter with it.
    counters = []

    class EMACounter(L.Callback):
        def on_train_batch_end(self, trainer, module, *args) -> None:
            counters.append((module.ema.state_dict()["optimization_step"], trainer.global_step))

    datamodule, resumed, trainer = build_denoiser_training(compose_denoiser(*short, "trainer.max_epochs=2"))
    trainer.callbacks.append(EMACounter())
    trainer.fit(resumed, datamodule=datamodule, ckpt_path=str(ckpt))
    assert trainer.global_step == 2 * steps
    # Callbacks' hooks run before the module's: the EMA has not yet taken this step's update.
    assert counters and all(ema_step + 1 == step for ema_step, step in counters), counters
    assert counters[0][1] == steps + 1


def _module(**kwargs) -> DDPMModule:
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
    )
    return DDPMModule(unet, DDPMScheduler(num_train_timesteps=1000), optimizer=torch.optim.Adam, **kwargs)


@pytest.mark.parametrize(("global_step", "decay"), [(1, 0.0), (2, 2 / 11), (11, 11 / 20), (10**6, 0.999)])
def test_ema_update_rule(global_step, decay, monkeypatch):
    module = _module(ema_decay=0.999)
    monkeypatch.setattr(DDPMModule, "global_step", property(lambda self: global_step - 1))
    module.on_train_start()  # a run (resumed) at step k - 1
    before = [p.detach().clone() for p in module.ema_unet.parameters()]
    with torch.no_grad():
        for p in module.unet.parameters():
            p.add_(1.0)
    # After the k-th optimizer step: decay min(0.999, k / (9 + k)), and 0 at the first (a copy).
    module.on_train_batch_end(None, None, 0)
    for ema, old, live in zip(module.ema_unet.parameters(), before, module.unet.parameters(), strict=True):
        torch.testing.assert_close(ema, decay * old + (1 - decay) * live)
        assert not ema.requires_grad


def test_diffusion_loss_noises_with_the_closed_form():
    """The scheduler's add_noise is the DDPM forward process sqrt(abar_t) (2x - 1) + sqrt(1 - abar_t) eps."""
    module = _module()
    x, noise, t = torch.rand(3, 1, 8, 8), torch.randn(3, 1, 8, 8), torch.tensor([0, 500, 999])
    abar = module.alphas_cumprod64[t][:, None, None, None]
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x_t, timesteps):
            seen.append(x_t)
            return type("Output", (), {"sample": torch.zeros_like(x_t)})()

    module.diffusion_loss(Recorder(), x, t, noise)
    expected = abar.sqrt() * (2 * x.double() - 1) + (1 - abar).sqrt() * noise.double()
    torch.testing.assert_close(seen[0].double(), expected, rtol=1e-5, atol=1e-5)


def test_dds_timestep_sampling_concentrates_on_the_t_star_range():
    module = _module(timestep_sampling="dds", dds_sigma_range=(0.25, 0.5), dds_fraction=1.0)
    assert module.dds_t_range == (144, 258)  # linear schedule t* for sigma 0.25 and 0.5 (hand values)
    t = module.sample_timesteps(10_000, torch.device("cpu"))
    assert t.min() >= 144 and t.max() <= 258
    mixed = _module(timestep_sampling="dds", dds_sigma_range=(0.25, 0.5), dds_fraction=0.5)
    t = mixed.sample_timesteps(20_000, torch.device("cpu"))
    inside = (t >= 144) & (t <= 258)
    # 50% focused + 50% uniform (which lands inside with probability 115/1000).
    assert inside.float().mean().item() == pytest.approx(0.5 + 0.5 * 115 / 1000, abs=0.015)
    with pytest.raises(ValueError, match="timestep_sampling"):
        _module(timestep_sampling="log")


def test_unet_size_must_fit_the_data(compose_denoiser):
    cfg = compose_denoiser(
        "denoiser_model.block_out_channels=[8,16,16,16]",
        "denoiser_model.down_block_types=[DownBlock2D,DownBlock2D,DownBlock2D,DownBlock2D]",
        "denoiser_model.up_block_types=[UpBlock2D,UpBlock2D,UpBlock2D,UpBlock2D]",
        "dataset=mnist5k",
    )
    with pytest.raises(ValueError, match="divisible by 8.*module.image_size to e.g. 32"):
        build_denoiser_training(cfg)


def test_convert_mode_through_the_app(compose_denoiser, tmp_path):
    small = dict(
        image_size=16,
        model_channels=32,
        num_res_blocks=1,
        channel_mult=(1, 2),
        attention_resolutions=(8,),
        num_heads=2,
        diffusion_steps=40,
    )
    original = ReferenceADMUNet(3, 32, 6, 1, (2,), (1, 2), num_heads=2)
    torch.save(original.state_dict(), tmp_path / "adm.pt")
    model_overrides = [
        f"+convert.model.{k}={list(v) if isinstance(v, tuple) else v}" for k, v in small.items()
    ]
    cfg = compose_denoiser("mode=convert", f"convert.src={tmp_path / 'adm.pt'}", *model_overrides)
    dst = run(cfg)
    assert dst == tmp_path / "checkpoints" / "denoisers" / "cifar10_improved_uncond"
    denoiser = load_diffusers_denoiser(dst, sigma=0.5)
    assert denoiser.describe()["num_train_timesteps"] == 40
    with pytest.raises(DDSXError, match="mode must be one of"):
        run(compose_denoiser("mode=finetune"))


def test_quality_is_recorded_and_a_denoiser_below_target_is_refused(compose_denoiser, tmp_path):
    save_dir = tmp_path / "ddpm"
    short = ["debug=limit", "trainer.max_epochs=1", "module.num_samples=0", f"save_dir={save_dir}"]
    # Any l2 ratio passes here: what fails is the step count, 5 of the 1,000 the target asks for.
    run(compose_denoiser(*short, "quality.min_steps=1000", "quality.max_l2_ratio=10"))
    quality = json.loads((save_dir / "quality.json").read_text())
    assert set(quality["l2_ratio"]) == {"0.25", "0.5", "1"} and quality["steps"] == 5
    assert quality["meets_target"] is False
    with pytest.raises(DDSXError, match=r"BELOW the target.*ckpt_path=.*last\.ckpt trainer\.max_epochs=1"):
        run(compose_denoiser("mode=check", f"save_dir={save_dir}"))


def test_a_denoiser_that_meets_its_target_is_accepted(compose_denoiser, tmp_path):
    save_dir = tmp_path / "ddpm"
    short = ["debug=limit", "trainer.max_epochs=1", "module.num_samples=0", f"save_dir={save_dir}"]
    run(compose_denoiser(*short, "quality.min_steps=5", "quality.max_l2_ratio=10"))
    assert run(compose_denoiser("mode=check", f"save_dir={save_dir}"))["meets_target"] is True
    # The same run against a ratio no 5-step model reaches: below target.
    run(compose_denoiser(*short, "quality.min_steps=5", "quality.max_l2_ratio=0.01"))
    with pytest.raises(DDSXError, match="BELOW"):
        run(compose_denoiser("mode=check", f"save_dir={save_dir}"))
    (save_dir / "quality.json").unlink()
    with pytest.raises(DDSXError, match="no quality.json"):
        run(compose_denoiser("mode=check", f"save_dir={save_dir}"))
