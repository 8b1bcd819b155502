"""Every option of every config group composes; bad choices fail with Hydra's list of options."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

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
