"""A regular (non-editable) install works: the wheel ships the configs as ddsx/conf (pkg://ddsx.conf),
and DDSX_CONF_DIR adds and overrides config groups on top of them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The wheel built from this checkout, installed with --no-deps into a folder of its own; the
    environment that runs its console scripts with the dependencies of the current interpreter."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    # The files git would commit (not build/ or *.egg-info of earlier builds), untracked new ones included.
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DDSX_CONF_DIR")}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(source)], env, tmp
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert not (source / "build").exists()  # setuptools builds outside the checkout (setup.py)
    (wheel,) = (tmp / "dist").glob("ddsx-*.whl")
    target = tmp / "target"
    done = run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], env, tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    # The target first: it must shadow any ddsx on sys.path (an editable install of this checkout).
    return target, env | {"PYTHONPATH": str(target)}


@pytest.mark.e2e
def test_wheel_ships_the_configs_inside_the_package(installed) -> None:
    target, env = installed
    probe = run(
        [sys.executable, "-c", "import ddsx.cli as c; print(c.__file__); print(c.CONF_DIR)"],
        env,
        target.parent,
    )
    assert probe.returncode == 0, probe.stderr
    module_file, conf = probe.stdout.split()
    assert Path(module_file).is_relative_to(target) and conf == "pkg://ddsx.conf"
    assert (target / "ddsx" / "conf" / "dataset" / "mnist5k.yaml").is_file()


@pytest.mark.e2e
def test_console_scripts_run_from_a_regular_install(installed, tmp_path: Path) -> None:
    target, env = installed
    job = run([str(target / "bin" / "ddsx-train"), "--cfg", "job"], env, tmp_path)
    assert job.returncode == 0, job.stderr[-3000:]
    assert "_target_: ddsx.data.mnist5k.MNIST5kDataModule" in job.stdout
    report = run([str(target / "bin" / "ddsx-report"), "--help"], env, tmp_path)
    assert report.returncode == 0 and "usage: ddsx-report" in report.stdout, report.stderr[-3000:]


def write_user_conf(user: Path) -> Path:
    (user / "dataset").mkdir(parents=True)
    (user / "optimizer").mkdir()
    # A new option of an existing group, built on one of ddsx's own ...
    (user / "dataset" / "small_digits.yaml").write_text("defaults:\n  - digits\n  - _self_\nbatch_size: 7\n")
    # ... and an option that replaces ddsx's (adamw is the default optimizer).
    (user / "optimizer" / "adamw.yaml").write_text(
        "_target_: torch.optim.AdamW\n_partial_: true\nlr: 0.0123\n"
    )
    return user


def test_user_config_dir_adds_and_overrides_groups(tmp_path: Path, monkeypatch) -> None:
    from hydra import compose, initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from ddsx.cli import CONF_DIR

    monkeypatch.setenv("DDSX_CONF_DIR", str(write_user_conf(tmp_path / "my_conf")))
    GlobalHydra.instance().clear()
    try:
        packaged = CONF_DIR.startswith("pkg://")  # an editable install maps conf/ to ddsx.conf
        with (
            initialize_config_module(CONF_DIR.removeprefix("pkg://"), version_base="1.3")
            if packaged
            else initialize_config_dir(config_dir=CONF_DIR, version_base="1.3")
        ):
            cfg = compose("ddsx_train", overrides=["dataset=small_digits"])
    finally:
        GlobalHydra.instance().clear()
    assert cfg.dataset._target_.endswith("DigitsDataModule") and cfg.dataset.batch_size == 7
    assert cfg.optimizer.lr == 0.0123


@pytest.mark.slow
def test_user_config_dir_works_with_a_regular_install(installed, tmp_path: Path) -> None:
    target, env = installed
    user = write_user_conf(tmp_path / "my_conf")
    job = run(
        [str(target / "bin" / "ddsx-train"), "--cfg", "job", "dataset=small_digits"],
        env | {"DDSX_CONF_DIR": str(user)},
        tmp_path,
    )
    assert job.returncode == 0, job.stderr[-3000:]
    assert "DigitsDataModule" in job.stdout and "batch_size: 7" in job.stdout
    assert "lr: 0.0123" in job.stdout
