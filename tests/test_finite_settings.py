"""Float settings must be finite numbers: NaN or inf anywhere in a console script's config is refused,
naming the key, before any data, model or run folder is built (sigma=nan once trained NaN weights)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ddsx.cli import certify as certify_cli
from ddsx.cli import train as train_cli
from ddsx.utils.finite_settings import NonFiniteSettingError, check_finite_settings
from tests import test_cli_errors
from tests.test_cli_errors import assert_clean, certify_args

run_app = test_cli_errors.run_app  # the fixture that runs a console script in this process


def test_nan_and_inf_are_refused_naming_the_dotted_key_ints_and_interpolations_pass() -> None:
    cfg = OmegaConf.create(
        {"sigma": 0.5, "epochs": 3, "name": "nan", "method": {"attack": {"steps": [1, 2], "eps": "${sigma}"}}}
    )
    check_finite_settings(cfg)  # a string "nan" is no float; an interpolation is checked at its source
    for key, value in [("sigma", "nan"), ("method.attack.eps", "inf"), ("optimizer.lr", "-inf")]:
        bad = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{key}=0.0"]))
        OmegaConf.update(bad, key, float(value))
        with pytest.raises(NonFiniteSettingError, match="^" + re.escape(f"{key}={value}: ")):
            check_finite_settings(bad)
    listed = OmegaConf.merge(cfg, {"method": {"attack": {"steps": [1, float("nan")]}}})
    with pytest.raises(NonFiniteSettingError, match=r"method\.attack\.steps\[1\]=nan"):
        check_finite_settings(listed)


def test_ddsx_train_sigma_nan_exits_2_with_one_line_and_writes_nothing(run_app, tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, stderr = run_app(train_cli.main, "sigma=nan", f"paths.root_dir={tmp_path}", f"hydra.run.dir={run}")
    assert_clean(code, stderr, "sigma=nan", "finite")
    assert not (run / "checkpoints").exists() and not (run / "config_resolved.yaml").exists()


def test_ddsx_certify_alpha_inf_and_train_lr_nan_are_refused(run_app, tmp_path: Path) -> None:
    code, stderr = run_app(certify_cli.main, *certify_args(tmp_path, "ckpt_path=x.ckpt", "certify.alpha=inf"))
    # CertifySettings' own range check (run first, by the override type check) names the field.
    assert_clean(code, stderr, "certify.alpha")
    code, stderr = run_app(train_cli.main, "optimizer.lr=nan", f"hydra.run.dir={tmp_path / 'run2'}")
    assert_clean(code, stderr, "optimizer.lr=nan")
