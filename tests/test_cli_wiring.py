"""What every ddsx app wires the same way (ddsx.cli.wiring): the W&B default, ``_target_`` nodes to
objects, Fabric's arguments from the trainer node, and what Hydra's runtime says about the command
line."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from ddsx.cli import wiring
from tests.conftest import CONF_DIR


def test_wandb_is_offline_unless_the_user_chose_a_mode(monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    wiring.offline_wandb_by_default()
    assert wiring.os.environ["WANDB_MODE"] == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    wiring.offline_wandb_by_default()
    assert wiring.os.environ["WANDB_MODE"] == "online"  # the user's choice is kept


def test_instantiate_nodes_builds_each_target_node_in_order_and_skips_the_rest() -> None:
    cfg = OmegaConf.create(
        {
            "a": {"_target_": "datetime.timedelta", "seconds": 3},
            "off": None,  # a node switched off with null
            "note": {"seconds": 9},  # no _target_: not an object to build
            "b": {"_target_": "datetime.timedelta", "minutes": 2},
        }
    )
    assert wiring.instantiate_nodes(cfg) == [datetime.timedelta(seconds=3), datetime.timedelta(minutes=2)]
    assert wiring.instantiate_nodes(None) == [] and wiring.instantiate_nodes(OmegaConf.create({})) == []


def test_experiment_loggers_come_from_the_logger_node() -> None:
    with_logger = OmegaConf.create({"logger": {"x": {"_target_": "datetime.timedelta", "hours": 1}}})
    assert wiring.experiment_loggers(with_logger) == [datetime.timedelta(hours=1)]
    assert wiring.experiment_loggers(OmegaConf.create({"logger": None})) == []  # logger=none
    assert wiring.experiment_loggers(OmegaConf.create({})) == []


def test_fabric_kwargs_take_the_fabric_keys_of_the_trainer_node_with_defaults() -> None:
    trainer = OmegaConf.create({"accelerator": "cpu", "devices": 2, "max_epochs": 5, "num_nodes": None})
    assert wiring.fabric_kwargs(trainer) == {
        "accelerator": "cpu",
        "devices": 2,
        "strategy": "auto",  # absent: the default
        "num_nodes": 1,  # null: the default
    }
    assert wiring.fabric_kwargs(None) == wiring.FABRIC_KEYS


@pytest.fixture
def hydra_run(tmp_path: Path):
    """Set Hydra's runtime as a job of ddsx-certify started with the given overrides would see it."""
    GlobalHydra.instance().clear()

    def start(*overrides: str) -> None:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                "ddsx_certify", overrides=[f"paths.root_dir={tmp_path}", *overrides], return_hydra_config=True
            )
        HydraConfig.instance().set_config(cfg)

    yield start
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


def test_outside_hydra_there_is_no_choice_and_nothing_was_given() -> None:
    HydraConfig.instance().cfg = None
    assert wiring.hydra_choice("classifier") is None
    assert wiring.given_on_command_line("classifier") is False


def test_hydra_choice_is_the_option_the_run_uses_default_or_given(hydra_run) -> None:
    hydra_run("classifier=resnet110")
    assert wiring.hydra_choice("classifier") == "resnet110"
    assert wiring.hydra_choice("dataset") == "mnist5k"  # from the defaults list
    assert wiring.hydra_choice("no_such_group") is None


def test_given_on_command_line_tells_a_given_group_from_a_default(hydra_run) -> None:
    hydra_run("classifier=resnet110", "logger=csv", "++certify.n=50")
    assert wiring.given_on_command_line("classifier") and wiring.given_on_command_line("logger")
    assert wiring.given_on_command_line("certify.n")  # the "++" (or "+", "~") prefix names the same key
    assert not wiring.given_on_command_line("dataset")  # chosen by the defaults only
    assert not wiring.given_on_command_line("certify")  # certify.n=50 sets a field, not the group
