"""An empty or garbage file given as a checkpoint fails with a message that names it, says it is not a
ddsx-train checkpoint, and never advises weights_only=False (which would run the file's code)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from ddsx.cli.certify import certify
from ddsx.cli.train import build_training, fit_and_test
from ddsx.models.checkpoints import load_classifier


class Payload:
    """A class pickled by reference: loading it needs more than tensors and containers."""


def garbage(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not a checkpoint\n" * 10)
    elif kind == "truncated":
        torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "code":
        torch.save({"state_dict": {}, "ddsx_config": Payload()}, path)
    elif kind == "plain pickle":
        path.write_bytes(pickle.dumps({"state_dict": {}}))
    elif kind == "a tensor":
        torch.save(torch.zeros(3), path)
    return path


KINDS = ["empty", "text", "truncated", "code", "plain pickle", "a tensor"]


def assert_clear(message: str, path: Path) -> None:
    assert str(path) in message and "is not a ddsx-train checkpoint" in message
    # torch's own message ("Re-running `torch.load` with `weights_only` set to `False` ...") must not leak.
    assert "weights_only" not in message and "False" not in message


@pytest.mark.parametrize("kind", KINDS)
def test_load_classifier_names_a_bad_file(tmp_path: Path, kind) -> None:
    path = garbage(tmp_path, kind)
    with pytest.raises(ValueError) as err:
        load_classifier(path)
    assert_clear(str(err.value), path)


@pytest.mark.parametrize("kind", ["empty", "code"])
def test_train_resume_and_init_classifier_name_a_bad_file(compose_train, tmp_path: Path, kind) -> None:
    path = garbage(tmp_path, kind)
    short = ("dataset=digits", "debug=limit", "logger=csv", "test=false")
    with pytest.raises(ValueError) as err:
        build_training(compose_train(*short, f"init_classifier={path}"))
    assert_clear(str(err.value), path)
    cfg = compose_train(*short, f"ckpt_path={path}")
    with pytest.raises(ValueError) as err:
        fit_and_test(cfg, *build_training(cfg))
    assert_clear(str(err.value), path)


def test_certify_names_a_bad_file(compose_certify, tmp_path: Path) -> None:  # noqa: F811
    path = garbage(tmp_path, "truncated")
    with pytest.raises(ValueError) as err:
        certify(compose_certify(f"ckpt_path={path}", "certify.max=1"))
    assert_clear(str(err.value), path)
