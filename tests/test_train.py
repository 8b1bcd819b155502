"""ddsx-train end to end on the embedded data: wiring, checkpoints, resume, clean failures."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddsx.cli.train import build_training, train
from ddsx.models.checkpoints import load_classifier
from ddsx.models.identity import module_fingerprint


@pytest.mark.parametrize("method", ["standard", "gaussian"])
def test_fast_dev_run(compose_train, method):
    cfg = compose_train(f"method={method}", "debug=fast_dev_run", "dataset=mnist5k")
    metrics = train(cfg)
    for view in ("clean", "noisy", "denoised"):
        assert 0.0 <= metrics[f"test/acc_{view}"] <= 1.0
    assert math.isfinite(metrics["train/loss_step"])


def _short_run(compose_train, *overrides):
    return compose_train(
        "dataset=digits", "debug=limit", "logger=csv", "trainer.max_epochs=1", "test=false", *overrides
    )


def test_checkpoint_rebuilds_classifier(compose_train):
    cfg = _short_run(compose_train, "method=gaussian", "sigma=0.5")
    datamodule, model, trainer = build_training(cfg)
    trainer.fit(model, datamodule=datamodule)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    classifier, run_config = load_classifier(ckpt)
    assert run_config["sigma"] == 0.5 and run_config["method"]["_target_"].endswith("GaussianModule")
    x = torch.rand(4, 1, 8, 8)
    model.eval()
    torch.testing.assert_close(classifier(x), model.classifier(x))
    # The frozen denoiser is never stored in training checkpoints.
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert not any(k.startswith("denoiser.") for k in state)


def test_resume_continues_from_checkpoint(compose_train):
    cfg = _short_run(compose_train)
    datamodule, model, trainer = build_training(cfg)
    trainer.fit(model, datamodule=datamodule)
    steps_after_one_epoch = trainer.global_step
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    cfg2 = _short_run(compose_train, "trainer.max_epochs=2")
    datamodule, model, trainer = build_training(cfg2)
    trainer.fit(model, datamodule=datamodule, ckpt_path=str(ckpt))
    assert trainer.current_epoch == 2
    assert trainer.global_step == 2 * steps_after_one_epoch


def _trained_fingerprint(compose_train, folder: Path, *overrides: str) -> str:
    """The weight fingerprint (the one result files record) of the classifier after a short training."""
    cfg = _short_run(compose_train, f"paths.output_dir={folder}", *overrides)
    datamodule, model, trainer = build_training(cfg)
    trainer.fit(model, datamodule=datamodule)
    return module_fingerprint(model.classifier)


def test_the_cpu_trainer_refuses_non_deterministic_ops(compose_train):
    build_training(_short_run(compose_train, "method=gaussian"))
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()


def test_one_seed_trains_one_network(compose_train, tmp_path):
    # gaussian draws training noise; one seed must give the same weights bit for bit, another seed others.
    runs = [("a", "seed=3"), ("b", "seed=3"), ("c", "seed=4")]
    fingerprints = [
        _trained_fingerprint(compose_train, tmp_path / name, "method=gaussian", seed) for name, seed in runs
    ]
    assert fingerprints[0] == fingerprints[1]
    assert fingerprints[0] != fingerprints[2]


def test_clean_training_gives_one_network_at_every_sigma(compose_train, tmp_path):
    # standard never sees sigma while training (issue 23: its fingerprint differed across sigma on a GPU).
    a = _trained_fingerprint(compose_train, tmp_path / "a", "method=standard", "sigma=0.25")
    b = _trained_fingerprint(compose_train, tmp_path / "b", "method=standard", "sigma=1.0")
    assert a == b


def test_the_pixel_attack_follows_sigma_and_its_scale_is_in_the_recorded_settings(compose_train):
    # attack=mnist_pixel at sigma 0.5 is the authors' attack=mnist; the checkpoint's settings say it scales.
    pixel = build_training(_short_run(compose_train, "method=dds_adv", "attack=mnist_pixel", "sigma=0.5"))[1]
    paper = build_training(_short_run(compose_train, "method=dds_adv", "attack=mnist", "sigma=0.5"))[1]
    assert pixel.run_config["attack"]["epsilon_scale"] == "sigma"
    assert paper.run_config["attack"]["epsilon_scale"] is None
    assert pixel.attack.at_sigma(0.5) == paper.attack
    at_one = build_training(_short_run(compose_train, "method=dds_adv", "attack=mnist_pixel", "sigma=1.0"))[1]
    assert (at_one.attack.at_sigma(1.0).step_size, at_one.attack.at_sigma(1.0).epsilon) == (0.05, 0.05)


@pytest.mark.e2e
def test_missing_dataset_fails_before_any_artefact(tmp_path):
    empty = tmp_path / "empty_data"
    empty.mkdir()
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ddsx.cli.train",
            "dataset=cifar10",
            f"paths.data_dir={empty}",
            f"hydra.run.dir={run_dir}",
            "logger=csv",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert str(empty) in result.stderr and "cifar-10-batches-py" in result.stderr
    assert not list(run_dir.rglob("*.ckpt")) and not (run_dir / "checkpoints").exists()
    assert not list(empty.iterdir()), "a failed setup must not write into the data folder"


@pytest.mark.e2e
def test_multirun_sweep_writes_one_folder_per_point(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ddsx.cli.train",
            "-m",
            "sigma=0.25,0.5",
            "method=gaussian,standard",
            "dataset=digits",
            "debug=fast_dev_run",
            f"paths.root_dir={tmp_path}",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    configs = sorted(sweep_dir.glob("*/config_resolved.yaml"))
    assert len(configs) == 4
    seen = {(c.read_text().count("sigma: 0.5") > 0, "StandardModule" in c.read_text()) for c in configs}
    assert seen == {(False, False), (False, True), (True, False), (True, True)}


def test_wandb_logger_runs_offline(compose_train, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "unset-below")  # so teardown restores the environment as it was
    monkeypatch.delenv("WANDB_MODE")
    cfg = compose_train("dataset=digits", "debug=limit", "trainer.max_epochs=1", "logger=wandb", "test=false")
    train(cfg)
    assert os.environ["WANDB_MODE"] == "offline"
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "an offline W&B run folder must be written next to the run's outputs"


def test_a_smoke_run_of_a_denoiser_method_without_one_says_what_its_numbers_mean(compose_train, caplog):
    import logging

    cfg = compose_train("dataset=digits", "debug=fast_dev_run", "method=dds_adv", "attack=mnist", "sigma=0.5")
    with caplog.at_level(logging.WARNING, logger="ddsx.cli.train"):
        train(cfg)
    assert "the test accuracies below are those of an untrained model" in caplog.text
    assert "method=dds_adv with denoiser=none" in caplog.text


def test_logger_none_with_the_default_callbacks_trains(compose_train):
    # The default callbacks hold a LearningRateMonitor, which Lightning refuses without a logger.
    cfg = compose_train("logger=none", "dataset=digits", "debug=fast_dev_run")
    assert "lr_monitor" in cfg.callbacks
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc_clean"] <= 1.0
