"""Certification split across jobs (certify.shard of certify.num_shards) and the merge of their files:
a Hydra multirun over the shard index plus a merge gives the rows of one process; the merge refuses
shards of different settings, a missing or doubled shard, a doubled idx and missing rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ddsx.certification import CertifySettings, InvalidSettingError, read_results, sidecar_path
from ddsx.certification.result_file import ResultFileError
from ddsx.certification.shards import merge_shards
from tests.test_certification_cli import _command, _env, _timeless
from tests.test_certify_multi import engine, make_classifier, make_dataset, timeless


@pytest.mark.parametrize("num_shards", [1, 2, 3, 7])
def test_shards_partition_the_selected_examples(num_shards: int) -> None:
    whole = CertifySettings(skip=3, max_examples=11).all_indices(100)
    parts = [
        CertifySettings(skip=3, max_examples=11, shard=i, num_shards=num_shards).indices(100)
        for i in range(num_shards)
    ]
    assert sorted(i for part in parts for i in part) == whole == list(range(0, 33, 3))
    assert sum(len(part) for part in parts) == len(whole)  # disjoint


@pytest.mark.parametrize("values", [{"shard": 2, "num_shards": 2}, {"shard": -1}, {"num_shards": 0}])
def test_a_shard_outside_its_range_is_refused(values: dict) -> None:
    with pytest.raises(InvalidSettingError, match=r"certify\.(num_)?shards?"):
        CertifySettings.from_mapping(values)


@pytest.mark.e2e
def test_a_multirun_over_the_shard_index_and_a_merge_give_the_rows_of_one_process(tmp_path: Path) -> None:
    overrides = ["certify.skip=7", "certify.max=9"]
    one, sweep, merged = tmp_path / "one", tmp_path / "sweep", tmp_path / "merged"
    subprocess.run(_command(one, *overrides), check=True, env=_env(), capture_output=True, timeout=300)
    result = subprocess.run(
        # --multirun before the overrides: Hydra's parser takes no flag after them
        [sys.executable, "-m", "ddsx.cli.certify", "--multirun", *_command(one, *overrides)[3:]]
        + ["certify.num_shards=3", "certify.shard=0,1,2", f"hydra.sweep.dir={sweep}"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    shard_files = sorted(sweep.rglob("certify.tsv"))
    assert len({p.parent for p in shard_files}) == 3  # one folder, one file per job
    assert [len(read_results(p)) for p in shard_files] == [3, 3, 3]
    result = subprocess.run(
        _command(merged, *overrides, "mode=merge", f"merge.inputs={sweep}"),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _timeless(merged / "certify.tsv")
    assert [r[0] for r in rows] == list(range(0, 63, 7))
    assert rows == _timeless(one / "certify.tsv")
    info = json.loads(sidecar_path(merged / "certify.tsv").read_text())["info"]
    assert len(info["merged_from"]) == 3


# ----- the merge's checks, on shard files made by the engine directly -------------------------------


def run_shards(tmp_path: Path, num_shards: int, shards=None, **overrides) -> list[Path]:
    """Certify the toy split as ``num_shards`` jobs (those in ``shards``), each into its own folder."""
    paths = []
    for i in range(num_shards) if shards is None else shards:
        certifier = engine(
            tmp_path / f"job{i}", [make_classifier(0)], None, shard=i, num_shards=num_shards, **overrides
        )
        paths += certifier.run(make_dataset())
    return paths


def test_merged_shards_equal_one_run_sorted_by_idx(tmp_path: Path) -> None:
    [whole] = engine(tmp_path / "whole", [make_classifier(0)], None).run(make_dataset())
    run_shards(tmp_path / "jobs", 3)
    [path] = merge_shards([tmp_path / "jobs"], tmp_path / "merged" / "certify.tsv")
    assert [r.idx for r in read_results(path)] == list(range(10))
    assert timeless(path) == timeless(whole)


def test_a_missing_shard_is_refused_naming_it(tmp_path: Path) -> None:
    run_shards(tmp_path / "jobs", 3, shards=[0, 2])
    with pytest.raises(ResultFileError, match=r"shard\(s\) \[1\] of 3 missing"):
        merge_shards([tmp_path / "jobs"], tmp_path / "out.tsv")
    assert not (tmp_path / "out.tsv").exists()


def test_a_shard_given_twice_is_refused(tmp_path: Path) -> None:
    run_shards(tmp_path / "a", 2)
    run_shards(tmp_path / "b", 2, shards=[1])
    with pytest.raises(ResultFileError, match=r"shard 1 of 2 twice"):
        merge_shards([tmp_path / "a", tmp_path / "b"], tmp_path / "out.tsv")


def test_shards_of_other_settings_do_not_make_one_run(tmp_path: Path) -> None:
    run_shards(tmp_path / "jobs", 2, shards=[0])
    run_shards(tmp_path / "other", 2, shards=[1], n=40)
    with pytest.raises(ResultFileError, match=r"missing"):
        merge_shards([tmp_path / "jobs", tmp_path / "other"], tmp_path / "out.tsv")


def test_an_idx_in_two_shards_is_refused(tmp_path: Path) -> None:
    first, second = run_shards(tmp_path / "jobs", 2)
    stolen = first.read_bytes().splitlines(keepends=True)[1]  # shard 0's first row, idx 0
    with open(second, "ab") as handle:
        handle.write(stolen)
    # Refused as a row outside shard 1's share, naming the shard file and line, before any writing.
    with pytest.raises(ResultFileError, match=rf"{second}:\d+: idx 0 is not an example this run selects"):
        merge_shards([tmp_path / "jobs"], tmp_path / "out.tsv")


def test_a_shard_with_missing_rows_is_refused(tmp_path: Path) -> None:
    first, _ = run_shards(tmp_path / "jobs", 2)
    lines = first.read_bytes().splitlines(keepends=True)
    first.write_bytes(b"".join(lines[:-1]))
    with pytest.raises(ResultFileError, match=r"holds 4 of its 5 rows"):
        merge_shards([tmp_path / "jobs"], tmp_path / "out.tsv")


def test_an_existing_output_is_never_replaced(tmp_path: Path) -> None:
    run_shards(tmp_path / "jobs", 2)
    out = tmp_path / "out.tsv"
    out.write_text("keep me\n")
    with pytest.raises(ResultFileError, match=r"exists"):
        merge_shards([tmp_path / "jobs"], out)
    assert out.read_text() == "keep me\n"


def test_shard_0_of_2_certifies_every_other_example(tmp_path: Path) -> None:
    """As the multi-process path splits: by position, every num_shards-th."""
    [path] = run_shards(tmp_path / "jobs", 2, shards=[0])
    assert [r.idx for r in read_results(path)] == [0, 2, 4, 6, 8]


def test_shards_of_several_classifiers_merge_into_one_file_per_classifier(tmp_path: Path) -> None:
    """One denoiser pass per shard for every classifier of a sweep folder, then one file each."""
    classifiers = [make_classifier(0), make_classifier(1)]
    whole = engine(tmp_path / "whole", classifiers, None).run(make_dataset())
    for i in range(2):
        engine(tmp_path / "jobs" / f"job{i}", classifiers, None, shard=i, num_shards=2).run(make_dataset())
    merged = merge_shards([tmp_path / "jobs"], tmp_path / "merged" / "certify.tsv")
    assert sorted(p.name for p in merged) == ["certify.h0.tsv", "certify.h1.tsv"]
    for path in whole:
        assert timeless(tmp_path / "merged" / path.name) == timeless(path)
    assert timeless(whole[0]) != timeless(whole[1])
