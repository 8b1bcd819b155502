"""Issue 21 item 10: what used to end in a traceback ends in one line and exit code 2 (or, for a stray
file that is not ours, in a warning): a read-only output, a full disk, a batch the memory cannot hold,
a stray shard-like file, near-miss Hydra keys in a checkpoint, a dataset config that is no datamodule."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest
import torch

from ddsx.certification import InvalidSettingError, ResultFileError, memory, read_results
from ddsx.certification.result_file import ResultFile
from ddsx.cli import certify as certify_cli
from ddsx.cli import train as train_cli
from tests.test_certification_cli import write_checkpoint
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
    # Once each, although the run lists its shards twice (validation and merge).
    assert sum(str(stray) in m for m in warned) == 1 and sum(str(padded) in m for m in warned) == 1


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


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder no file can be created in, for this user: a chmod'ed one, or for root (whom chmod does
    not stop) sysfs, which refuses new files to everyone."""
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    folder = Path("/sys")
    try:
        (folder / "ddsx-probe").write_text("")
    except OSError:
        return folder
    (folder / "ddsx-probe").unlink()
    pytest.skip("running as root without a location that refuses writes (sysfs took a file)")


@pytest.mark.parametrize("where", ["the folder", "a folder below it"])
def test_a_read_only_output_is_refused_in_one_line_before_any_model_is_built(
    run_app,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    monkeypatch,
    where: str,
) -> None:
    folder = unwritable_folder(tmp_path)
    output = folder / "certify.tsv" if where == "the folder" else folder / "run" / "sub" / "certify.tsv"
    ckpt = write_checkpoint(tmp_path / "last.ckpt")

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the output was checked")

    monkeypatch.setattr(certify_cli, "load_from_config", no_model)
    code, stderr = run_app(
        certify_cli.main, *certify_args(tmp_path, f"ckpt_path={ckpt}", f"certify.output={output}")
    )
    assert_clean(code, stderr, f"certify.output={output}", str(folder))
    assert not output.exists()


def test_the_certify_callback_checks_its_output_when_built(tmp_path: Path) -> None:
    from ddsx.certification.callback import CertifyCallback

    folder = unwritable_folder(tmp_path)
    with pytest.raises(ResultFileError, match=f"certify.output={folder}"):
        CertifyCallback({"output": str(folder / "certify.tsv")})


class FullDisk:
    """An unbuffered file that takes ``room`` more bytes, the last write only partly, then refuses
    every write with ENOSPC, as a file on a filling disk does."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        taken = self.handle.write(bytes(data[: self.room]))
        self.room -= taken
        return taken

    def __getattr__(self, name: str):
        return getattr(self.handle, name)


def test_a_full_disk_while_writing_rows_keeps_the_rows_and_says_so_in_one_line(
    run_app,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    monkeypatch,
) -> None:
    ckpt = write_checkpoint(tmp_path / "last.ckpt")
    args = certify_args(tmp_path, f"ckpt_path={ckpt}", "certify.max=2")
    code, stderr = run_app(certify_cli.main, *args)
    assert code is None, stderr[-3000:]
    path = tmp_path / "run" / "certify.tsv"
    before = path.read_bytes()
    real_open = ResultFile.open_for_append

    def filling(self, where):
        writer = real_open(self, where)
        writer._handle = FullDisk(writer._handle, room=len(before.splitlines()[1]) + 20)
        return writer

    monkeypatch.setattr(ResultFile, "open_for_append", filling)
    args = certify_args(tmp_path, f"ckpt_path={ckpt}", "certify.max=5")
    code, stderr = run_app(certify_cli.main, *args)
    message = assert_clean(code, stderr, str(path), "no space left on device", "after 1 rows", "resume")
    assert "\n" not in message.strip()
    after = path.read_bytes()
    assert after.startswith(before) and len(after) > len(before) + 1  # 1 new row and a torn one
    assert [r.idx for r in read_results(path)] == [0, 1, 2]
    monkeypatch.setattr(ResultFile, "open_for_append", real_open)  # space freed: the same command resumes
    code, stderr = run_app(certify_cli.main, *args)
    assert code is None, stderr[-3000:]
    assert [r.idx for r in read_results(path)] == [0, 1, 2, 3, 4]
    assert path.read_bytes().startswith(after[: after.rindex(b"\n") + 1])


def test_a_batch_is_counted_as_its_float32_copies() -> None:
    # 10 copies of a 1x4x4 image: 160 float32 values, held 3 times (noise, noisy, denoised)
    assert memory.batch_bytes(10, (1, 4, 4)) == 10 * 16 * 4 * 3


def test_a_batch_larger_than_the_free_memory_is_refused_naming_the_setting(monkeypatch) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda device: 100 * memory.batch_bytes(1, (3, 32, 32)))
    cpu = torch.device("cpu")
    with pytest.raises(InvalidSettingError, match=r"certify.batch_size=101: .* at most 100 "):
        memory.check_batch_fits(101, 10**6, (3, 32, 32), cpu)
    memory.check_batch_fits(100, 10**6, (3, 32, 32), cpu)  # fits exactly
    memory.check_batch_fits(10**9, 100, (3, 32, 32), cpu)  # a batch never holds more than the run's copies
    memory.check_batch_fits("auto", 10**6, (3, 32, 32), cpu)  # autotune bounds its own candidates


def test_a_voting_denoisers_batch_counts_its_votes(monkeypatch) -> None:
    # 5 votes: noise and noisy images once, 5 denoised images per copy: 7 float32 copies, not 3.
    assert memory.batch_bytes(10, (1, 4, 4), denoised_per_copy=5) == 10 * 16 * 4 * 7
    monkeypatch.setattr(memory, "available_bytes", lambda device: 100 * memory.batch_bytes(1, (3, 32, 32)))
    cpu = torch.device("cpu")
    memory.check_batch_fits(100, 10**6, (3, 32, 32), cpu)  # fits with one denoised image per copy
    with pytest.raises(InvalidSettingError, match=r"7 float32 copies.* at most 42 "):
        memory.check_batch_fits(100, 10**6, (3, 32, 32), cpu, denoised_per_copy=5)  # 100 * 3 // 7 = 42


def test_the_free_memory_is_the_gpus_free_memory_or_the_available_ram(monkeypatch) -> None:
    total = next(
        int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal:")
    )
    assert 0 < memory.available_bytes(torch.device("cpu")) <= total
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (123, 456))
    assert memory.available_bytes(torch.device("cuda", 0)) == 123
    assert memory.available_bytes(torch.device("meta")) is None


def test_a_batch_size_of_a_billion_is_refused_in_one_line_before_any_row(
    run_app,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    monkeypatch,
) -> None:
    # 64 MiB free, whatever machine runs the test: 87,381 noisy 8x8 digits at 768 bytes each
    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**26)
    ckpt = write_checkpoint(tmp_path / "last.ckpt")
    args = ("certify.batch_size=1000000000", "certify.n=100000", "certify.max=1")  # 100,004 copies
    code, stderr = run_app(certify_cli.main, *certify_args(tmp_path, f"ckpt_path={ckpt}", *args))
    assert_clean(code, stderr, "certify.batch_size=1000000000", "0.0625 GiB is free", "at most 87,381")
    assert not (tmp_path / "run" / "certify.tsv").exists()
