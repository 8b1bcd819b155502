"""Command-line overrides checked against the composed config before a job starts (ddsx.cli.config_checks):
added fields that nothing reads and values of the wrong type are refused; what the apps accept passes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from ddsx.certification import InvalidSettingError
from ddsx.cli.config_checks import ConfigFieldError, check_overrides
from tests.conftest import CONF_DIR


def check(tmp_path: Path, *overrides: str, app: str = "ddsx_train") -> None:
    """check_overrides as the running job sees it: Hydra initialised, the job's config set."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(app, overrides=[f"paths.root_dir={tmp_path}", *overrides], return_hydra_config=True)
            with open_dict(cfg):
                cfg.hydra.runtime.output_dir = str(tmp_path / "run")
                cfg.hydra.job.num = 0
            HydraConfig.instance().set_config(cfg)
            check_overrides(cfg)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    ("override", "nearest"),
    [
        ("+certify.nn=10", "did you mean certify.n?"),
        ("+trainer.max_epoch=3", "did you mean trainer.max_epochs?"),  # not an argument of Trainer
        ("+attack.stepsize=0.2", "did you mean attack.step_size?"),
        ("+optimizer.weightdecay=0.1", "did you mean optimizer.weight_decay?"),
    ],
)
def test_an_added_field_nothing_reads_is_refused_naming_the_nearest(tmp_path, override, nearest):
    with pytest.raises(ConfigFieldError, match=nearest.replace(".", r"\.").replace("?", r"\?")):
        check(tmp_path, override)


@pytest.mark.parametrize(
    "override",
    [
        "+trainer.limit_train_batches=5",  # an argument of lightning's Trainer the yaml does not set
        "++certify.nn=10",  # force-add: the user's own business
        "+callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor",  # a new object
        "+my_note=hello",  # a new top-level key, outside ddsx's groups
    ],
)
def test_added_fields_that_something_reads_pass(tmp_path, override):
    check(tmp_path, override)


@pytest.mark.parametrize(
    ("overrides", "app", "message"),
    [
        (["trainer.max_epochs=ten"], "ddsx_train", "trainer.max_epochs='ten': expected int or null"),
        (["trainer.deterministic=maybe"], "ddsx_train", "trainer.deterministic='maybe'"),
        (["sigma=abc"], "ddsx_train", "sigma='abc': expected number"),  # a plain node: its default's type
        (["attack=mnist", "attack.steps=[1,2]"], "ddsx_train", "attack.steps=[1, 2]: expected int"),
        (["test=yes"], "ddsx_train", "test='yes': expected bool"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(tmp_path, overrides, app, message):
    with pytest.raises(ConfigFieldError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check(tmp_path, *overrides, app=app)


def test_certify_values_are_checked_by_their_schema(tmp_path):
    with pytest.raises(InvalidSettingError, match="certify.n"):
        check(tmp_path, "certify.n=abc", app="ddsx_certify")


@pytest.mark.parametrize(
    "override",
    [
        "trainer.devices=auto",  # int default, but Trainer takes a str too
        "trainer.gradient_clip_val=0.5",  # a null default
        "trainer.max_epochs=3",
        "sigma=1",  # an int where the default is a float
        "certify.batch_size=auto",
        "seed=3",
        "ckpt_path=/some/where.ckpt",  # a null default takes anything
    ],
)
def test_values_the_apps_accept_pass(tmp_path, override):
    check(tmp_path, override)
