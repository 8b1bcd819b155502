"""Every option of every config group composes; bad choices fail with Hydra's list of options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict

from tests.conftest import CONF_DIR

# Groups selectable from ddsx_train and the options found on disk (new files are picked up automatically).
TRAIN_GROUPS = [
    "dataset",
    "classifier",
    "denoiser",
    "method",
    "optimizer",
    "scheduler",
    "trainer",
    "logger",
    "callbacks",
    "certify",
    "attack",
    "experiment",
    "debug",
    "hydra/launcher",
]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


CASES = [(group, option) for group in TRAIN_GROUPS for option in _options(group)]


def test_every_group_has_options():
    missing = [g for g in TRAIN_GROUPS if not _options(g)]
    assert not missing, f"config groups with no options: {missing}"


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_resolves(compose_train, group, option):
    cfg = compose_train(f"{group}={option}")
    # Resolving catches dangling interpolations; hydra.* is Hydra's own business.
    body = {k: v for k, v in cfg.items() if k != "hydra"}
    resolved = OmegaConf.to_container(OmegaConf.create(body), resolve=True)
    assert resolved["sigma"] > 0
    if group not in ("experiment", "debug", "hydra/launcher"):
        chosen = cfg.hydra.runtime.choices[group]
        assert chosen == option


def test_unknown_option_lists_choices(compose_train):
    with pytest.raises(ConfigCompositionException) as err:
        compose_train("dataset=not_a_dataset")
    message = str(err.value)
    assert "not_a_dataset" in message and "mnist5k" in message and "cifar10" in message


def test_any_field_overridable(compose_train):
    cfg = compose_train("sigma=0.5", "optimizer.lr=0.123", "trainer.max_epochs=3", "dataset.batch_size=17")
    assert cfg.sigma == 0.5 and cfg.method.sigma == 0.5
    assert cfg.optimizer.lr == 0.123 and cfg.trainer.max_epochs == 3 and cfg.dataset.batch_size == 17


@pytest.mark.parametrize(
    ("recipe", "expected"),
    [
        (
            "imagenet_dds_adv",
            {
                "trainer.strategy": "ddp",
                "trainer.accumulate_grad_batches": 4,
                "trainer.precision": "bf16-mixed",
                "attack.step_size": 0.05,
            },
        ),
        ("cifar10_dds_adv", {"trainer.precision": "bf16-mixed", "attack.steps": 2, "attack.epsilon": None}),
        ("mnist_dds_adv", {"attack.epsilon": 0.1, "optimizer.lr": 5e-5, "trainer.max_epochs": 20}),
    ],
)
@pytest.mark.e2e
def test_recipes_print_their_resolved_config_from_the_console_script(tmp_path, recipe, expected):
    """`ddsx-train --cfg job experiment=<recipe>` works from the installed entry point (any cwd)."""
    script = Path(sys.executable).with_name("ddsx-train")
    result = subprocess.run(
        [str(script), "--cfg", "job", "--resolve", f"experiment={recipe}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    printed = OmegaConf.create(result.stdout)
    assert (
        printed.method._target_.endswith("DDSAdversarialModule") and printed.method.attack == printed.attack
    )
    for key, value in expected.items():
        assert OmegaConf.select(printed, key) == value, key


@pytest.mark.parametrize(("recipe", "sigma"), [("mnist5k_dds_adv", 0.5), ("mnist_dds_adv", 0.5)])
def test_recipe_values_beat_the_primary_config(compose_train, recipe, sigma):
    """An experiment's top-level keys (sigma) must override ddsx_train.yaml's defaults."""
    cfg = compose_train(f"experiment={recipe}")
    assert cfg.sigma == sigma and cfg.method.sigma == sigma and cfg.certify.sigma == sigma


APPS = ["train", "certify", "denoiser", "analyze"]


@pytest.mark.parametrize("app", APPS)
def test_every_app_takes_its_run_and_sweep_folders_from_the_one_shared_block(app, tmp_path):
    """conf/hydra/ddsx.yaml names the folders of all four apps (outputs/<app>/, multirun/<app>/)."""
    primary = yaml.safe_load((CONF_DIR / f"ddsx_{app}.yaml").read_text())
    assert "hydra" not in primary, f"ddsx_{app}.yaml repeats the run/sweep block of conf/hydra/ddsx.yaml"
    GlobalHydra.instance().clear()
    # the console script's module name is Hydra's job name (ddsx.cli.certify -> certify)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=app):
        cfg = compose(f"ddsx_{app}", overrides=[f"paths.root_dir={tmp_path}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
    HydraConfig.instance().set_config(cfg)
    assert Path(cfg.hydra.run.dir).parent == tmp_path / "outputs" / app
    assert Path(cfg.hydra.sweep.dir).parent == tmp_path / "multirun" / app
    assert "ckpt_path" in cfg.hydra.job.config.override_dirname.exclude_keys


@pytest.mark.parametrize(
    ("app", "paths"),
    [
        (
            "certify",
            ["ckpt_path=/a/b.ckpt", "denoiser=mnist5k", "denoiser.path=/c/d", "certify.output=/e/f.tsv"],
        ),
        ("train", ["ckpt_path=/a/b.ckpt", "trainer.default_root_dir=/c/d", "dataset.data_dir=/e"]),
        ("denoiser", ["save_dir=/a/b", "module.sample_dir=/c/d", "paths.checkpoint_dir=/e"]),
    ],
)
def test_a_sweep_jobs_folder_name_leaves_out_path_overrides(
    tmp_path: Path, app: str, paths: list[str]
) -> None:
    """A path in the job folder's name (hydra.sweep.subdir) would nest the folder along the path."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=app):
        cfg = compose(
            f"ddsx_{app}",
            overrides=[*paths, "seed=3", f"paths.root_dir={tmp_path}"],
            return_hydra_config=True,
        )
    GlobalHydra.instance().clear()
    kept = [p for p in paths if "/" not in p]  # a group choice tells jobs apart and stays
    assert cfg.hydra.job.override_dirname == ",".join(sorted([*kept, "seed=3"]))


def test_attacks_share_keep_best_and_classifier_mode_from_one_file(compose_train):
    files = sorted(p.name for p in (CONF_DIR / "attack").glob("*.yaml") if "keep_best:" in p.read_text())
    assert files == ["none.yaml"]
    for option in _options("attack"):
        attack = compose_train(f"attack={option}").attack
        assert attack.keep_best is False and attack.classifier_mode == "train", option


def test_analyze_config_has_no_dummy_method_and_its_wandb_logger_resolves(tmp_path):
    from tests.conftest import compose_config

    cfg = compose_config("ddsx_analyze", [f"paths.root_dir={tmp_path}", "logger=wandb"], tmp_path / "run")
    assert "method" not in cfg
    run = OmegaConf.to_container(cfg.logger.wandb.run, resolve=True)
    assert run["method"] is None and run["sigma"] == cfg.sigma


@pytest.mark.parametrize("debug", ["fast_dev_run", "limit"])
def test_debug_overlays_keep_the_chosen_accelerator(compose_train, debug):
    cfg = compose_train("trainer=gpu", f"debug={debug}")
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.precision) == ("gpu", 1, "bf16-mixed")
    assert compose_train(f"debug={debug}").trainer.accelerator == "cpu"  # the default trainer is cpu


def test_the_default_denoiser_path_is_absolute_from_the_checkpoint_dir(compose_train, tmp_path, monkeypatch):
    from tests.conftest import compose_config

    monkeypatch.delenv("DDSX_CHECKPOINTS", raising=False)
    monkeypatch.delenv("DDSX_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = compose_config("ddsx_train", ["denoiser=mnist5k"], tmp_path / "run")
    assert cfg.denoiser.path == str(tmp_path / "checkpoints" / "denoisers" / "mnist5k_ddpm")
    monkeypatch.setenv("DDSX_CHECKPOINTS", "/ckpts")
    cfg = compose_config("ddsx_train", ["denoiser=mnist5k"], tmp_path / "run")
    assert cfg.denoiser.path == "/ckpts/denoisers/mnist5k_ddpm"
