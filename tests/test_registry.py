"""Registries from one place (issue 19): a denoiser, classifier or method is registered by its yaml in
conf/<group>/, and the allowlist of stored configs, the --help option lists and the W&B attack tags
all follow from it; a bad model file is an expected error by its type, wherever it is raised."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from ddsx import registry
from ddsx.cli import analyze as analyze_cli
from ddsx.cli import certify as certify_cli
from ddsx.cli import train as train_cli
from ddsx.cli.errors import expected_message
from ddsx.errors import ModelFileError
from ddsx.loggers.wandb import run_tags
from ddsx.models.checkpoints import read_checkpoint
from ddsx.utils.safe_instantiate import UnsafeConfigError, allowed_targets, check_config

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_the_allowlist_is_what_the_group_yamls_name_by_both_paths() -> None:
    assert allowed_targets("classifier") == {
        "ddsx.models.classifiers.lenet",
        "ddsx.models.classifiers.lenet.lenet",
        "ddsx.models.classifiers.cifar_resnet",
        "ddsx.models.classifiers.resnet_cifar.cifar_resnet",
        "ddsx.models.classifiers.timm_classifier",
        "ddsx.models.classifiers.timm_model.timm_classifier",
    }
    assert allowed_targets("denoiser") == {
        "ddsx.denoisers.IdentityDenoiser",
        "ddsx.denoisers.base.IdentityDenoiser",
        "ddsx.denoisers.load.load_diffusers_denoiser",
        "ddsx.denoisers.consistency_folder.load_consistency_denoiser",
        "ddsx.denoisers.densepure.load_densepure_denoiser",
        "ddsx.denoisers.local_smoothing.load_local_smoothing_denoiser",
    }
    with pytest.raises(ValueError, match="rebuild only"):
        allowed_targets("method")  # stored method configs are never rebuilt


def test_registering_is_adding_a_yaml(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    before = registry.targets("classifier", conf)
    (conf / "classifier" / "wide.yaml").write_text(
        "_target_: ddsx.models.classifiers.resnet_cifar.CifarResNetNetwork\n"
    )
    conf_after = tmp_path / "conf2"  # targets() caches per folder: a new folder is a new registry
    shutil.copytree(conf, conf_after)
    added = registry.targets("classifier", conf_after) - before
    assert added == {"ddsx.models.classifiers.resnet_cifar.CifarResNetNetwork"}
    assert "wide" in registry.options("classifier", conf_after)
    # A stored config naming something no option of ddsx's own conf/ names stays refused.
    with pytest.raises(UnsafeConfigError, match="not one of ddsx's model constructors"):
        check_config({"_target_": "ddsx.models.classifiers.resnet_cifar.CifarResNetNetwork"},
                     allowed_targets("classifier"), "test")  # fmt: skip


def _help(main, monkeypatch, capsys) -> str:
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", [main.__module__, "--help"])
    with pytest.raises(SystemExit):
        main()
    GlobalHydra.instance().clear()
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("main", "groups"),
    [
        (train_cli.main, {"method": (), "classifier": (), "denoiser": ()}),
        (certify_cli.main, {"denoiser": ()}),
        (analyze_cli.main, {"denoiser": ("none",)}),  # ddsx-analyze needs a diffusion denoiser
    ],
)
def test_help_lists_exactly_the_registered_options(main, groups, monkeypatch, capsys) -> None:
    text = _help(main, monkeypatch, capsys)
    for group, left_out in groups.items():
        [listed] = re.findall(rf"\b{group}=([\w|]+)", text)
        assert set(listed.split("|")) == set(registry.options(group)) - set(left_out), group


def test_help_templates_keep_no_hand_written_registry_list() -> None:
    for path in (CONF / "hydra" / "help").glob("*.yaml"):
        for group in registry.REGISTRIES:
            hand_written = re.findall(rf"\b{group}=[\w]+\|[\w|]+", path.read_text())
            assert not hand_written, f"{path.name}: {hand_written} (use ${{ddsx.options:{group}}})"


@pytest.mark.parametrize("method", registry.options("method"))
def test_w_and_b_tags_name_the_attack_only_for_a_method_that_reads_it(compose_train, method) -> None:
    cfg = compose_train(f"method={method}", "logger=wandb", "attack=mnist_strong")
    run = cfg.logger.wandb.run
    reads = "attack" in registry.option_config("method", method)
    assert (run.attack is not None) == reads
    tags = run_tags("mnist5k", 0.25, method, "mnist_strong", run.attack)
    assert ("attack=mnist_strong" in tags) == reads
    assert reads == (method == "dds_adv")  # today's one such method, from its yaml alone


def test_a_bad_model_file_is_an_expected_error_by_its_type(tmp_path: Path) -> None:
    empty = tmp_path / "last.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError) as error:
        read_checkpoint(empty)
    assert expected_message(error.value) == str(error.value)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(ModelFileError, match="holds no state_dict") as error:
        read_checkpoint(foreign)
    assert expected_message(error.value) == str(error.value)
    # A plain ValueError from anywhere else is a bug: its traceback is kept.
    assert expected_message(ValueError("a bug")) is None
