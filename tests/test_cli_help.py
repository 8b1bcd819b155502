"""`--help` of every console script starts with what it does and the options that matter."""

from __future__ import annotations

import sys

import pytest
from hydra.core.global_hydra import GlobalHydra

from ddsx.cli import analyze as analyze_cli
from ddsx.cli import denoiser as denoiser_cli
from ddsx.cli import report as report_cli
from ddsx.cli import train as train_cli


@pytest.mark.parametrize(
    ("main", "starts", "must", "unused_groups"),
    [
        (
            train_cli.main,
            "ddsx-train: train a classifier",
            ["experiment=", "trainer.accelerator=cpu"],
            ["denoiser_model"],
        ),
        (
            denoiser_cli.main,
            "ddsx-denoiser: train a DDPM",
            ["ckpt_path=", "mode=check", "mode=convert"],
            ["method", "attack"],
        ),
        (
            analyze_cli.main,
            "ddsx-analyze: measure the covariate shift",
            ["ckpt_path=", "lpips.weights=", "extra_sigmas="],
            ["method", "certify", "denoiser_model"],
        ),
        (report_cli.main, "usage: ddsx-report", ["--skip-bad", "--compare"], []),
    ],
)
def test_help_describes_the_app(main, starts, must, unused_groups, monkeypatch, capsys) -> None:
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", [main.__module__, "--help"])
    with pytest.raises(SystemExit) as exit_:
        main()
    GlobalHydra.instance().clear()
    text = capsys.readouterr().out
    assert exit_.value.code in (0, None)
    assert text.lstrip().startswith(starts), text[:300]
    assert "powered by Hydra" not in text
    for option in must:
        assert option in text
    groups = text.split("reads:")[-1] if "reads:" in text else ""
    for group in unused_groups:
        assert group not in groups


def test_the_cli_package_names_every_console_script_of_pyproject() -> None:
    from importlib.metadata import distribution

    import ddsx.cli

    scripts = [e.name for e in distribution("ddsx").entry_points if e.group == "console_scripts"]
    assert len(scripts) == 5
    assert [name for name in scripts if name not in ddsx.cli.__doc__] == []
