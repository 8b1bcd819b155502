"""Issue 21 item 10: what used to end in a traceback ends in one line and exit code 2 (or, for a stray
file that is not ours, in a warning): a read-only output, a full disk, a batch the memory cannot hold,
a stray shard-like file, near-miss Hydra keys in a checkpoint, a dataset config that is no datamodule."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ddsx.certification import read_results
from ddsx.cli import certify as certify_cli
from ddsx.cli import train as train_cli
from tests.test_certify_reliability import run
from tests.test_cli_errors import assert_clean, certify_args, run_app  # noqa: F401 - run_app: a fixture


def test_a_stray_part_file_beside_a_result_file_is_left_alone_with_a_warning(tmp_path: Path, caplog) -> None:
    path, _ = run(tmp_path, max=2)
    stray = path.with_name(path.name + ".rank_old.part")
    stray.write_bytes(b"not rows at all\n")
    padded = path.with_name(path.name + ".rank01.part")  # not a name shard_path makes either
    padded.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="ddsx"):
        run(tmp_path, max=4)  # resumes: the stray files are neither read nor merged nor deleted
    assert [r.idx for r in read_results(path)] == [0, 1, 2, 3]
    assert stray.read_bytes() == b"not rows at all\n" and padded.exists()
    warned = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert any(str(stray) in m for m in warned) and any(str(padded) in m for m in warned)


@pytest.mark.parametrize(
    ("target", "what"),
    [
        ("torch.nn.Identity", "torch.nn.modules.linear.Identity, not a LightningDataModule"),
        ("lightning.pytorch.LightningDataModule", "without num_classes and image_shape"),
    ],
)
@pytest.mark.parametrize("app", ["certify", "train"])
def test_a_user_dataset_config_that_is_no_datamodule_is_named_in_one_line(
    run_app,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    monkeypatch,
    target: str,
    what: str,
    app: str,
) -> None:
    user = tmp_path / "my_conf" / "dataset"
    user.mkdir(parents=True)
    (user / "not_data.yaml").write_text(f"_target_: {target}\n")
    monkeypatch.setenv("DDSX_CONF_DIR", str(user.parent))
    if app == "certify":
        code, stderr = run_app(certify_cli.main, *certify_args(tmp_path, "dataset=not_data", "sigma=0.5"))
    else:
        code, stderr = run_app(train_cli.main, "dataset=not_data", f"hydra.run.dir={tmp_path / 'run'}")
    assert_clean(code, stderr, "dataset=not_data", target, what)
