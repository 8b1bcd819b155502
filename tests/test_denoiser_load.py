"""Loading DDS denoisers from local diffusers folders, the clear failures, and the conf/denoiser group."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import hydra
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from hydra.errors import InstantiationException

from ddsx.denoisers import IdentityDenoiser
from ddsx.denoisers.dds import DiffusionDenoiser
from ddsx.denoisers.load import load_diffusers_denoiser


def _tiny_unet(out_channels: int = 1) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=out_channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
    )


@pytest.fixture
def pipeline_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ddpm"
    DDPMPipeline(unet=_tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(folder)
    return folder


def test_loaded_denoiser_equals_the_saved_model(pipeline_dir):
    denoiser = load_diffusers_denoiser(pipeline_dir, sigma=0.5)
    reference = DiffusionDenoiser(_tiny_unet(), DDPMScheduler(num_train_timesteps=1000).alphas_cumprod, 0.5)
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(denoiser(x), reference(x))
    info = denoiser.describe()
    assert info["t_star"] == 258 and info["source"] == str(pipeline_dir)  # linear T=1000, sigma 0.5
    assert all(not p.requires_grad for p in denoiser.parameters()) and not denoiser.training


def test_unet_folder_with_its_scheduler_config(pipeline_dir, tmp_path):
    flat = tmp_path / "flat"
    shutil.copytree(pipeline_dir / "unet", flat)
    shutil.copy(pipeline_dir / "scheduler" / "scheduler_config.json", flat / "scheduler_config.json")
    denoiser = load_diffusers_denoiser(flat, sigma=0.25, num_steps=3, dtype="float64")
    assert denoiser.t_star == 144 and len(denoiser.timesteps) == 3
    assert next(denoiser.unet.parameters()).dtype == torch.float64
    assert denoiser(torch.rand(1, 1, 8, 8)).dtype == torch.float32


def test_missing_or_incomplete_folders_say_what_to_put_there(pipeline_dir, tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"nowhere.*does not exist.*unet/.*scheduler.*DDSX_CHECKPOINTS.*paths.checkpoint_dir",
    ):
        load_diffusers_denoiser(tmp_path / "nowhere", sigma=0.25)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no UNet config found"):
        load_diffusers_denoiser(empty, sigma=0.25)
    shutil.rmtree(pipeline_dir / "scheduler")
    with pytest.raises(FileNotFoundError, match="no scheduler config"):
        load_diffusers_denoiser(pipeline_dir, sigma=0.25)


def test_missing_weights_and_wrong_architecture(pipeline_dir):
    config_file = pipeline_dir / "unet" / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "block_out_channels": [8, 24]}))
    with pytest.raises(ValueError, match="wrong architecture"):
        load_diffusers_denoiser(pipeline_dir, sigma=0.25)
    no_attention = {"down_block_types": ["DownBlock2D"] * 2, "up_block_types": ["UpBlock2D"] * 2}
    config_file.write_text(json.dumps({**config, **no_attention}))
    with pytest.raises(ValueError, match="wrong architecture.*unexpected_keys"):
        load_diffusers_denoiser(pipeline_dir, sigma=0.25)
    config_file.write_text(json.dumps({**config, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ValueError, match="needs a pixel-space UNet2DModel"):
        load_diffusers_denoiser(pipeline_dir, sigma=0.25)
    config_file.write_text(json.dumps(config))
    (pipeline_dir / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no UNet weights"):
        load_diffusers_denoiser(pipeline_dir, sigma=0.25)


class _Payload:
    """Pickled by reference: a weights-only load refuses to rebuild it."""


@pytest.mark.parametrize(
    "weights",
    [
        "truncated safetensors",
        "pickle with code",
    ],
)
def test_weights_that_fail_the_safe_load_say_so(pipeline_dir, weights):
    unet = pipeline_dir / "unet"
    safetensors_file = unet / "diffusion_pytorch_model.safetensors"
    if weights == "truncated safetensors":
        safetensors_file.write_bytes(safetensors_file.read_bytes()[:100])
        name = safetensors_file.name
    else:
        safetensors_file.unlink()
        name = "diffusion_pytorch_model.bin"
        torch.save({"conv_in.weight": _Payload()}, unet / name)
    with pytest.raises(ValueError, match="failed the safe load") as err:
        load_diffusers_denoiser(pipeline_dir, sigma=0.25)
    message = str(err.value)
    assert str(unet) in message and name in message
    assert "False" not in message and "no UNet weights" not in message


def test_sigma_beyond_the_schedule_fails(pipeline_dir):
    with pytest.raises(ValueError, match="beyond this diffusion schedule's largest noise"):
        load_diffusers_denoiser(pipeline_dir, sigma=100.0)


def test_denoiser_config_group(compose_train, pipeline_dir):
    cfg = compose_train("denoiser=diffusers", f"denoiser.path={pipeline_dir}", "sigma=0.5")
    denoiser = hydra.utils.instantiate(cfg.denoiser)
    assert isinstance(denoiser, DiffusionDenoiser) and denoiser.sigma == 0.5 and denoiser.t_star == 258
    none = hydra.utils.instantiate(compose_train("denoiser=none", "sigma=0.25").denoiser)
    assert isinstance(none, IdentityDenoiser) and none.sigma == 0.25
    for name, folder in [
        ("mnist5k", "mnist5k_ddpm"),
        ("cifar10", "cifar10_improved_uncond"),
        ("imagenet", "imagenet_guided_256_uncond"),
    ]:
        cfg = compose_train(f"denoiser={name}")
        assert cfg.denoiser.path == str(Path(cfg.paths.checkpoint_dir) / "denoisers" / folder)
        assert cfg.denoiser._target_ == "ddsx.denoisers.load.load_diffusers_denoiser"
        with pytest.raises((FileNotFoundError, InstantiationException), match=folder):
            hydra.utils.instantiate(cfg.denoiser)


def test_denoiser_distance_script(pipeline_dir, tmp_path, capsys):
    """experiments/denoiser_distance.py on a tiny random model: prints the table; --check fails it."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "experiments" / "denoiser_distance.py"
    spec = importlib.util.spec_from_file_location("denoiser_distance", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = ["--path", str(pipeline_dir), "--dataset", "digits", "--limit", "16", "--sigmas", "0.25", "0.5"]
    assert module.main([f"paths.root_dir={tmp_path}", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.strip().startswith(("0.25", "0.5"))]
    assert [r[1] for r in rows] == ["144", "258"]  # t* on the linear T=1000 schedule
    noisy = [float(r[3]) for r in rows]
    assert noisy[1] == pytest.approx(2 * noisy[0], rel=2e-3)  # same seeded noise, twice the sigma
    assert (
        module.main([f"paths.root_dir={tmp_path}", *args, "--check"]) == 1
    )  # an untrained model halves nothing
