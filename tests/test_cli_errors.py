"""Expected errors of every console script: exit code 2, one message naming the cause, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
from hydra.core.global_hydra import GlobalHydra

from ddsx.certification import InvalidSettingError
from ddsx.cli import certify as certify_cli
from ddsx.cli import denoiser as denoiser_cli
from ddsx.cli import report as report_cli
from ddsx.cli import train as train_cli
from ddsx.cli.errors import DDSXError, expected_message
from tests.conftest import FAST_CERTIFY
from tests.test_certification_cli import write_checkpoint


@pytest.fixture
def run_app(tmp_path: Path, monkeypatch, capsys) -> Callable[..., tuple[int, str]]:
    """Run a console script in this process as its entry point would; returns (exit code, stderr)."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("DDSX_DEBUG", raising=False)

    def _run(main: Callable[[], object], *argv: str) -> tuple[int, str]:
        GlobalHydra.instance().clear()
        monkeypatch.setattr(sys, "argv", [main.__module__, *argv])
        capsys.readouterr()
        try:
            code = main()
        except SystemExit as exit_:
            code = exit_.code
        return code, capsys.readouterr().err

    yield _run
    GlobalHydra.instance().clear()


def assert_clean(code: int, stderr: str, *cause: str) -> str:
    """Exit code 2, no traceback, and one ``<app>: error:`` line that names the cause."""
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("ddsx-") and ": error: " in line]
    assert len(lines) == 1, stderr[-3000:]
    message = stderr[stderr.index(lines[0]) :]
    for word in cause:
        assert word in message, message
    return message


def certify_args(tmp_path: Path, *overrides: str) -> list[str]:
    return [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}", *FAST_CERTIFY, *overrides]


def test_refused_resume(run_app, tmp_path: Path) -> None:
    ckpt = write_checkpoint(tmp_path / "last.ckpt", sigma=0.5)
    code, stderr = run_app(certify_cli.main, *certify_args(tmp_path, f"ckpt_path={ckpt}", "certify.max=2"))
    assert code is None, stderr[-3000:]
    code, stderr = run_app(
        certify_cli.main, *certify_args(tmp_path, f"ckpt_path={ckpt}", "certify.max=2", "certify.n=80")
    )
    assert_clean(code, stderr, "certify.tsv", "n")
    assert (tmp_path / "run" / "certify.tsv").is_file()  # a folder with results in it is kept


def test_missing_data(run_app, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, stderr = run_app(
        train_cli.main, "dataset=cifar10", f"paths.data_dir={empty}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert_clean(code, stderr, str(empty), "cifar-10-batches-py")
    # A run that failed before writing anything leaves no folder (Hydra had made it, with .hydra/).
    assert not (tmp_path / "run").exists()


def test_malformed_data(run_app, tmp_path: Path) -> None:
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"not a pickle at all")
    code, stderr = run_app(
        train_cli.main,
        "dataset=cifar10",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert_clean(code, stderr, "malformed", "cifar-10-batches-py")


@pytest.mark.parametrize("app", ["certify", "train"])
def test_missing_checkpoint(run_app, tmp_path: Path, app: str) -> None:
    # checked before the data loads: the missing CIFAR-10 is never reached, and no folder is left
    missing_data = ["dataset=cifar10", f"paths.data_dir={tmp_path / 'empty'}"]
    if app == "certify":
        args = certify_args(tmp_path, f"ckpt_path={tmp_path / 'no.ckpt'}", *missing_data)
        code, stderr = run_app(certify_cli.main, *args)
    else:
        args = [f"ckpt_path={tmp_path / 'no.ckpt'}", *missing_data, f"hydra.run.dir={tmp_path / 'run'}"]
        code, stderr = run_app(train_cli.main, *args)
    assert "cifar" not in assert_clean(code, stderr, "no.ckpt", "ckpt_path")
    assert not (tmp_path / "run").exists()


def test_checkpoint_not_from_ddsx_train(run_app, tmp_path: Path) -> None:
    import torch

    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, ckpt)
    code, stderr = run_app(certify_cli.main, *certify_args(tmp_path, f"ckpt_path={ckpt}"))
    assert_clean(code, stderr, "other.ckpt", "ddsx-train")


def test_missing_denoiser(run_app, tmp_path: Path) -> None:
    code, stderr = run_app(
        certify_cli.main,
        *certify_args(tmp_path, "denoiser=diffusers", f"denoiser.path={tmp_path / 'nothing'}", "sigma=0.5"),
    )
    assert_clean(code, stderr, "nothing", "does not exist")


def test_invalid_setting(run_app, tmp_path: Path) -> None:
    code, stderr = run_app(certify_cli.main, *certify_args(tmp_path, "certify.n=-1", "sigma=0.5"))
    assert_clean(code, stderr, "certify.n")


def test_config_option_that_does_not_exist(run_app, tmp_path: Path) -> None:
    code, stderr = run_app(train_cli.main, "dataset=nope", f"paths.root_dir={tmp_path}")
    message = assert_clean(code, stderr, "dataset/nope", "mnist5k")
    assert "search path" not in message


def test_unknown_added_field_names_the_nearest_real_one(run_app, tmp_path: Path) -> None:
    # Hydra's hint for a mistyped certify.nn=10 is +certify.nn=10, which nothing would read
    code, stderr = run_app(train_cli.main, "+certify.nn=10", f"paths.root_dir={tmp_path}")
    assert_clean(code, stderr, "+certify.nn", "certify.n?")
    assert not (tmp_path / "outputs").exists()  # outputs/train/<time>_<task>/ was removed, and its parents


def test_ill_typed_field_is_refused_before_any_work(run_app, tmp_path: Path) -> None:
    # the missing CIFAR-10 would be the first thing the job touches: the type error comes first
    args = [
        "trainer.max_epochs=ten",
        "dataset=cifar10",
        f"paths.data_dir={tmp_path}",
        f"paths.root_dir={tmp_path}",
    ]
    message = assert_clean(*run_app(train_cli.main, *args), "trainer.max_epochs='ten'", "int")
    assert "cifar" not in message
    assert not (tmp_path / "outputs").exists()


def test_missing_convert_source(run_app, tmp_path: Path) -> None:
    code, stderr = run_app(
        denoiser_cli.main, "mode=convert", f"convert.src={tmp_path / 'adm.pt'}", f"paths.root_dir={tmp_path}"
    )
    assert_clean(code, stderr, "adm.pt")


@pytest.mark.parametrize("trainer", ["ddp", "gpu"])
def test_gpu_requested_on_a_machine_without_one(run_app, tmp_path: Path, trainer: str) -> None:
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("this machine has a GPU")
    code, stderr = run_app(
        train_cli.main, f"trainer={trainer}", "dataset=digits", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert_clean(code, stderr, "trainer.accelerator=cpu")
    assert not (tmp_path / "run").exists()


def test_gpu_requested_for_certification_on_a_machine_without_one(run_app, tmp_path: Path) -> None:
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("this machine has a GPU")
    ckpt = write_checkpoint(tmp_path / "last.ckpt", sigma=0.5)
    code, stderr = run_app(certify_cli.main, *certify_args(tmp_path, f"ckpt_path={ckpt}", "trainer=gpu"))
    assert_clean(code, stderr, "trainer.accelerator=cpu")


class _PressCtrlC(L.Callback):
    def on_train_batch_start(self, *args, **kwargs) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_in_training(run_app, tmp_path: Path, monkeypatch) -> None:
    # Lightning turns Ctrl-C during fit into its own sys.exit(1): that too is a clean interruption.
    build = train_cli.build_training

    def build_and_interrupt(cfg):
        datamodule, model, trainer = build(cfg)
        trainer.callbacks.append(_PressCtrlC())
        return datamodule, model, trainer

    monkeypatch.setattr(train_cli, "build_training", build_and_interrupt)
    code, stderr = run_app(train_cli.main, "dataset=digits", f"hydra.run.dir={tmp_path / 'run'}")
    assert_clean(code, stderr, "interrupted")


@pytest.mark.slow  # a real SIGINT to a real ddsx-certify process: ~35 s here
def test_ctrl_c_in_certification_keeps_the_rows(tmp_path: Path) -> None:
    run_dir, ckpt = tmp_path / "run", write_checkpoint(tmp_path / "last.ckpt", sigma=0.5)
    command = [
        sys.executable,
        "-m",
        "ddsx.cli.certify",
        # Long enough (about a minute) that Ctrl-C lands in the middle on any machine.
        *certify_args(tmp_path, f"ckpt_path={ckpt}", "certify.n=20000", "certify.batch_size=1000"),
        f"hydra.run.dir={run_dir}",
        "certify.max=300",
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    # Lightning ignores SIGINT for good after a KeyboardInterrupt in fit (test_ctrl_c_in_training),
    # and a child inherits an ignored SIGINT: give the child Python's default handler back.
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    path = run_dir / "certify.tsv"
    deadline = time.time() + 240
    while time.time() < deadline and (not path.exists() or len(path.read_text().splitlines()) < 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert_clean(process.returncode, stderr, "interrupted")
    assert 2 <= len(path.read_text().splitlines()) - 1 < 300


def test_debug_flag_keeps_the_exception(run_app, tmp_path: Path) -> None:
    with pytest.raises(InvalidSettingError, match="certify.n"):
        run_app(certify_cli.main, "--debug", *certify_args(tmp_path, "certify.n=-1", "sigma=0.5"))


def test_report_of_a_missing_folder(run_app, tmp_path: Path) -> None:
    code, stderr = run_app(report_cli.main, str(tmp_path / "nowhere"))
    assert_clean(code, stderr, "nowhere")


def test_what_is_expected_and_what_is_a_bug() -> None:
    class Refused(DDSXError):
        pass

    assert expected_message(Refused("resume refused: n differs")) == "resume refused: n differs"
    assert expected_message(KeyboardInterrupt()) == "interrupted (Ctrl-C)"
    # A bug keeps its traceback: plain errors raised by ddsx's own code are not "expected".
    assert expected_message(RuntimeError("index out of range")) is None
    assert expected_message(ValueError("shapes do not match")) is None


def test_a_launcher_plugin_that_is_not_installed_says_which_extra_to_install(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    # conf/hydra/launcher/local.yaml starts from Hydra's joblib launcher; a wheel without the launchers
    # extra has no hydra/launcher/joblib: the same composition error, made here with a missing option
    (tmp_path / "hydra" / "launcher").mkdir(parents=True)
    (tmp_path / "hydra" / "launcher" / "local.yaml").write_text("defaults:\n  - joblib_not_installed\n")
    (tmp_path / "app.yaml").write_text("defaults:\n  - override hydra/launcher: local\n")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        with pytest.raises(Exception) as error:
            compose("app", return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert "pip install 'ddsx[launchers]'" in expected_message(error.value)


def test_sweep_with_a_plus_says_to_drop_it(compose_train) -> None:
    with pytest.raises(Exception) as error:
        compose_train("+sweep=mnist5k_small")
    assert "write sweep=<name>, without +" in expected_message(error.value)


def test_multirun_with_cfg_is_one_line_and_exit_2(monkeypatch, capsys) -> None:
    from ddsx.cli.errors import console_script

    ran = []
    monkeypatch.setattr(sys, "argv", ["ddsx-certify", "-m", "certify.sigma=0.25,0.5", "--cfg", "job"])
    with pytest.raises(SystemExit) as exit_info:
        console_script(lambda: ran.append(1))()
    assert exit_info.value.code == 2 and not ran
    assert capsys.readouterr().err.count("\n") == 1
    monkeypatch.setattr(sys, "argv", ["ddsx-certify", "certify.sigma=0.25", "--cfg", "job"])
    console_script(lambda: ran.append(1))()
    assert ran == [1]
