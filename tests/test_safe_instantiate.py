"""A checkpoint's stored config never chooses what code runs: the file-writing payload of issue 9
through ddsx-certify (classifier and denoiser), ddsx-train init_classifier= and resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ddsx.cli.certify import certify
from ddsx.cli.certify import main as certify_main
from ddsx.cli.train import build_training
from ddsx.models.checkpoints import load_classifier
from ddsx.utils.safe_instantiate import UnsafeConfigError, allowed_targets, check_config, safe_instantiate
from tests.test_certification_cli import write_checkpoint
from tests.test_cli_errors import assert_clean, certify_args, run_app  # noqa: F401 - run_app: a fixture

CLASSIFIER_TARGETS = allowed_targets("classifier")


def write_text_payload(victim: Path) -> dict:
    """``pathlib.Path(victim).write_text("owned")``, as a Hydra node: it writes when instantiated."""
    return {
        "_target_": "pathlib.Path.write_text",
        "self": {"_target_": "pathlib.Path", "_args_": [str(victim)]},
        "data": "owned",
    }


def poison(ckpt: Path, group: str, node: dict) -> Path:
    state = torch.load(ckpt, weights_only=True)
    state["ddsx_config"][group] = node
    torch.save(state, ckpt)
    return ckpt


def nested_in_lenet(victim: Path) -> dict:
    # The payload as an argument of an allowed constructor: Hydra builds nested nodes first.
    return {"_target_": "ddsx.models.classifiers.lenet", "input_size": write_text_payload(victim)}


@pytest.mark.parametrize("where", ["top", "nested"])
def test_certify_refuses_a_classifier_config_payload(compose_certify, tmp_path: Path, where) -> None:
    victim = tmp_path / "victim.txt"
    node = write_text_payload(victim) if where == "top" else nested_in_lenet(victim)
    ckpt = poison(write_checkpoint(tmp_path / "last.ckpt"), "classifier", node)
    with pytest.raises(UnsafeConfigError, match="pathlib.Path") as err:
        certify(compose_certify(f"ckpt_path={ckpt}", "certify.max=1"))
    assert str(ckpt) in str(err.value) and "classifier" in str(err.value)
    assert not victim.exists()
    assert not (tmp_path / "run" / "certify.tsv").exists()


def test_certify_refuses_a_denoiser_config_payload(compose_certify, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    ckpt = poison(write_checkpoint(tmp_path / "last.ckpt"), "denoiser", write_text_payload(victim))
    with pytest.raises(
        UnsafeConfigError, match=r"key 'denoiser._target_' names _target_ 'pathlib.Path.write_text'"
    ):
        certify(compose_certify(f"ckpt_path={ckpt}", "certify.max=1"))
    assert not victim.exists()
    assert not (tmp_path / "run" / "certify.tsv").exists()


def test_train_init_classifier_refuses_a_payload(compose_train, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    ckpt = poison(write_checkpoint(tmp_path / "init.ckpt"), "classifier", nested_in_lenet(victim))
    cfg = compose_train("dataset=digits", "debug=limit", f"init_classifier={ckpt}")
    with pytest.raises(UnsafeConfigError, match=r"key 'classifier.input_size._target_'"):
        build_training(cfg)
    assert not victim.exists()


def test_resume_refuses_a_checkpoint_with_a_payload(compose_train, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    short = ("dataset=digits", "debug=limit", "logger=csv", "test=false", "method=gaussian")
    datamodule, model, trainer = build_training(compose_train(*short, "trainer.max_epochs=1"))
    trainer.fit(model, datamodule=datamodule)
    ckpt = poison(Path(trainer.checkpoint_callback.last_model_path), "denoiser", write_text_payload(victim))
    datamodule, model, trainer = build_training(compose_train(*short, "trainer.max_epochs=2"))
    with pytest.raises(UnsafeConfigError, match="pathlib.Path.write_text"):
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(ckpt))
    assert not victim.exists()
    assert trainer.current_epoch < 2


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"_target_": "os.system", "command": "true"}, "key 'm._target_' names _target_ 'os.system'"),
        ({"_target_": "ddsx.models.classifiers.lenet", "_partial_": True}, "key 'm._partial_'"),
        ({"_target_": "ddsx.models.classifiers.lenet", "_args_": [10]}, "key 'm._args_'"),
        ({"_target_": "ddsx.models.classifiers.lenet", "_recursive_": False}, "key 'm._recursive_'"),
        (
            {"_target_": "ddsx.models.classifiers.lenet", "x": [{"_target_": "os.getcwd"}]},
            "m.x\\[0\\]._target_",
        ),
        ({"_target_": "ddsx.models.classifiers.lenet", "input_size": "${oc.env:HOME}"}, "interpolation"),
        ({"_target_": " ddsx.models.classifiers.lenet"}, "names _target_"),
        ({"_target_": "ddsx.utils.run_config.save_resolved_config"}, "names _target_"),
        # near misses of the reserved keys: Hydra passes them on as arguments, ddsx never writes them
        (
            {"_target_": "ddsx.models.classifiers.lenet", "_target_ ": "os.system"},
            "'m._target_ ' is a near miss",
        ),
        ({"_target_ ": "ddsx.models.classifiers.lenet"}, "'m._target_ ' is a near miss"),
        ({"_target_": "ddsx.models.classifiers.lenet", "x": {"_Target_": "os.getcwd"}}, "'m.x._Target_'"),
        ({"_target_": "ddsx.models.classifiers.lenet", "__partial__": True}, "'m.__partial__' is a near"),
        ({"_target_": "ddsx.models.classifiers.lenet", "_tar\u200bget_": "os.getcwd"}, "near miss"),
    ],
)
def test_check_config_refuses_everything_off_the_list(node, message) -> None:
    with pytest.raises(UnsafeConfigError, match=message):
        check_config(node, CLASSIFIER_TARGETS, "test", "m")


@pytest.mark.parametrize("name", ["target", "args", "input_size"])
def test_plain_argument_names_are_no_near_miss(name: str) -> None:
    check_config({"_target_": "ddsx.models.classifiers.lenet", name: 1}, CLASSIFIER_TARGETS, "test", "m")


def test_certify_refuses_a_near_miss_key_in_one_line(
    run_app,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    node = {"_target_": "ddsx.models.classifiers.lenet", "input_size": 28, "_target_ ": "os.system"}
    ckpt = poison(write_checkpoint(tmp_path / "last.ckpt"), "classifier", node)
    code, stderr = run_app(certify_main, *certify_args(tmp_path, f"ckpt_path={ckpt}", "certify.max=1"))
    assert_clean(code, stderr, str(ckpt), "'classifier._target_ '", "near miss")
    assert not (tmp_path / "run" / "certify.tsv").exists()


def test_allowed_constructor_builds(tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "ok.ckpt")
    classifier, _ = load_classifier(ckpt)
    assert classifier(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    built = safe_instantiate(
        {"_target_": "ddsx.models.classifiers.lenet", "input_size": 28},
        CLASSIFIER_TARGETS,
        "t",
        num_classes=3,
    )
    assert built(torch.rand(1, 1, 8, 8)).shape == (1, 3)
