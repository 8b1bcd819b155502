"""Reading offline W&B run files: the LevelDB log framing (records split across 32 KiB blocks, block
padding, a torn tail), and the flattening and tags of ddsx's W&B logger."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from ddsx.loggers.wandb import flatten, run_tags, sweep_group
from ddsx.report.wandb_offline import BLOCK_SIZE, WandbFileError, records

HEADER = b":W&B" + b"\xe1\xbe\x00"  # as wandb 0.31 writes it


def write_log(path: Path, payloads: list[bytes], torn: int = 0) -> None:
    """A LevelDB-format log as W&B writes it (header, then chunks that never cross a block boundary)."""
    data = bytearray(HEADER)
    for payload in payloads:
        rest, first = payload, True
        while True:
            left = BLOCK_SIZE - len(data) % BLOCK_SIZE
            if left < 7:
                data += b"\x00" * left  # block padding
                continue
            chunk, rest = rest[: left - 7], rest[left - 7 :]
            kind = (1 if not rest else 2) if first else (4 if not rest else 3)
            crc = zlib.crc32(bytes([kind]) + chunk)  # W&B's checksum: IEEE CRC-32 of type and bytes
            data += crc.to_bytes(4, "little") + len(chunk).to_bytes(2, "little") + bytes([kind]) + chunk
            first = False
            if not rest:
                break
    path.write_bytes(bytes(data[: len(data) - torn]))


def test_records_come_back_whole_across_blocks_and_padding(tmp_path: Path) -> None:
    # header 7 + (7 + 10) + (7 + 2nd) leaves 3 bytes of the first block: padding before the 3rd
    sizes = [10, BLOCK_SIZE - 7 - 17 - 7 - 3, 0, 40_000, 100_000, 5]
    payloads = [os.urandom(size) for size in sizes]
    write_log(tmp_path / "run.wandb", payloads)
    assert list(records(tmp_path / "run.wandb")) == payloads


def test_a_torn_last_record_and_a_foreign_file_are_refused(tmp_path: Path) -> None:
    payloads = [os.urandom(100), os.urandom(200)]
    write_log(tmp_path / "run.wandb", payloads, torn=50)
    with pytest.raises(WandbFileError, match="truncated"):
        list(records(tmp_path / "run.wandb"))
    (tmp_path / "other.wandb").write_bytes(b"PK\x03\x04 not a run")
    with pytest.raises(WandbFileError, match="not a W&B run file"):
        list(records(tmp_path / "other.wandb"))


def test_config_is_flattened_to_dotted_keys_and_tags_name_the_attack_strength() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None, "f": {}}) == {
        "a.b": 1,
        "a.c.d": [1, 2],
        "e": None,
        "f": {},
    }
    attack = {"steps": 1, "step_size": 0.2, "epsilon": 0.2, "norm": "linf", "keep_best": False}
    assert run_tags("mnist5k", 0.5, "dds_adv", "mnist_strong", attack) == [
        "dataset=mnist5k",
        "sigma=0.5",
        "method=dds_adv",
        "attack=mnist_strong",
        "attack.steps=1",
        "attack.step_size=0.2",
        "attack.epsilon=0.2",
        "attack.norm=linf",
    ]
    # methods that never read the attack have none (their yaml has no attack key): no attack tag;
    # an absent field gives no tag
    assert run_tags("mnist5k", None, "dds_finetune", "mnist", None) == [
        "dataset=mnist5k",
        "method=dds_finetune",
    ]
    assert (
        sweep_group("/x/multirun/train/2026-01-01_10-00-00", "mnist5k_grid")
        == "mnist5k_grid-2026-01-01_10-00-00"
    )


@pytest.mark.e2e
def test_ddsx_certify_logs_to_an_offline_w_and_b_run(tmp_path: Path) -> None:
    """ddsx-certify has no method or attack: the W&B tags must not need them (they once crashed it).
    The console app itself, in its own process, as a user runs it."""
    import subprocess

    from ddsx.certification import read_results
    from ddsx.certification.metrics import summarize
    from ddsx.report.wandb_offline import find_runs, read_run
    from tests.test_certification_cli import _command, _env, write_checkpoint

    ckpt = write_checkpoint(tmp_path / "last.ckpt", sigma=0.5)
    command = _command(
        tmp_path / "run", f"ckpt_path={ckpt}", "certify.skip=30", "certify.max=3", "logger=wandb"
    )
    command.remove("certify.sigma=0.25")  # the checkpoint's sigma
    result = subprocess.run(command, env=_env() | {"WANDB_MODE": "offline"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    [folder] = find_runs([tmp_path / "run"])
    run = read_run(folder)
    assert run.job_type == "certify" and "dataset=digits" in run.tags and run.exit_code == 0
    assert run.config["certify.n"] == 40 and run.config["certify_resolved.sigma"] == 0.5
    rows = read_results(tmp_path / "run" / "certify.tsv")
    assert run.summary["cert/acr"] == pytest.approx(summarize(rows, [])["acr"])
