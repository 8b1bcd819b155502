"""dds_adv and dds_finetune end to end through a real (tiny) diffusers UNet: ddsx-train fits, saves a
checkpoint without the UNet's weights that rebuilds the classifier, and certifies at the trained sigma
with the t* the denoiser recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler

from ddsx.cli.train import build_training, fit_and_test, train
from ddsx.denoisers.schedule import alphas_cumprod_from_scheduler_config, t_star_for_sigma
from ddsx.models.checkpoints import load_classifier
from tests.conftest import tiny_unet

SIGMA = 0.25


@pytest.fixture
def unet_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny_ddpm"
    tiny_unet(8).save_pretrained(folder / "unet")
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(folder / "scheduler")
    return folder


@pytest.mark.parametrize("method", ["dds_adv", "dds_finetune"])
def test_fast_dev_run_through_a_real_unet(compose_train, unet_folder, method):
    cfg = compose_train(
        "dataset=digits", "debug=fast_dev_run", f"method={method}", "attack=mnist", f"sigma={SIGMA}",
        "denoiser=diffusers", f"denoiser.path={unet_folder}",
    )  # fmt: skip
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss_step"])) and "test/acc_denoised" in metrics


@pytest.mark.parametrize("method", ["dds_adv", "dds_finetune"])
@pytest.mark.parametrize("rule", ["nearest", "at_least"])
def test_train_checkpoint_and_certify_through_a_real_unet(compose_train, unet_folder, method, rule):
    cfg = compose_train(
        "dataset=digits", "debug=limit", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        f"method={method}", "attack=mnist", f"sigma={SIGMA}",
        "denoiser=diffusers", f"denoiser.path={unet_folder}", f"denoiser.t_star_rule={rule}",
        "callbacks=certify", "certify=fast", "certify.max=2", "certify.n0=10", "certify.n=50",
        "certify.progress=false",
    )  # fmt: skip
    datamodule, model, trainer = build_training(cfg)
    metrics = fit_and_test(cfg, datamodule, model, trainer)
    out = Path(cfg.paths.output_dir)
    # The checkpoint holds the classifier, never the UNet, and rebuilds the classifier exactly.
    ckpt = out / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert state and not any(k.startswith("denoiser.") for k in state)
    classifier, run_config = load_classifier(ckpt)
    assert run_config["method"]["name"] == method
    # Certified at the trained sigma, through the denoiser tuned to it under the configured rule.
    assert metrics["cert/examples"] == 2
    identity = json.loads((out / "certify.settings.json").read_text())
    assert identity["settings"]["sigma"] == SIGMA
    abar = alphas_cumprod_from_scheduler_config(
        json.loads((unet_folder / "scheduler" / "scheduler_config.json").read_text())
    )
    assert identity["denoiser"]["t_star"] == t_star_for_sigma(abar, SIGMA, rule)
    assert identity["info"]["denoiser"]["t_star_rule"] == rule
    assert identity["info"]["run"]["method"] == method
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(classifier.eval()(x), model.classifier.eval()(x))
