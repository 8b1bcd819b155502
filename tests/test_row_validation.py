"""One validator of result rows for every reader (issue 21 items 1, 2, 3, 9): resume, ddsx-report and
the shard merge each refuse a row that cannot belong to its run (an idx twice with other content, an
idx outside the selection, another n / n0 / sigma, a radius that is not finite or beyond what n and
alpha allow, a label that contradicts the data), naming the file and line; a file without settings is
shown as "settings unknown" and never averaged; a resume on another split is refused naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ddsx.certification import (
    CertifySettings,
    ClassifierSpec,
    ResultFileError,
    SettingsMismatchError,
    build_certifier,
    read_results,
    sidecar_path,
)
from ddsx.certification.shards import merge_shards
from ddsx.cli.report import main as report_main
from ddsx.data.datasets import TensorImageDataset
from ddsx.report import envelope_table, load_runs, summary_table
from tests.test_certify_reliability import CountingClassifier
from tests.test_certify_reliability import run as certify_toy
from tests.test_certify_shards import run_shards
from tests.test_report import RADII, write_run


def edit_row(path: Path, line: int, **fields: str) -> None:
    """Set columns of the row on ``line`` (1-based, the header is line 1) to the given text."""
    lines = path.read_text().splitlines(keepends=True)
    values = lines[line - 1].rstrip("\n").split("\t")
    columns = lines[0].rstrip("\n").split("\t")
    for name, text in fields.items():
        values[columns.index(name)] = text
    lines[line - 1] = "\t".join(values) + "\n"
    path.write_text("".join(lines))


def report_refuses(capsys, root: Path, where: str, reason: str) -> None:
    """ddsx-report stops with exit 2 and one line naming ``where`` (file:line) and ``reason``."""
    with pytest.raises(SystemExit) as exit_:
        report_main([str(root), "--out", str(root / "report")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert where in err and reason in err, err
    assert "Traceback" not in err


# ----- ddsx-report (item 1) -------------------------------------------------------------------------


def six_rows(root: Path) -> Path:
    # No correct row certified beyond 0: 0 % at r > 0, every cell known.
    return write_run(root / "run", "gaussian", 0.25, [(0, 0.0)] * 6, n=200)


def test_report_refuses_a_forged_second_row_of_an_idx(tmp_path: Path, capsys) -> None:
    path = six_rows(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    lines[6] = lines[4]  # idx 5's row replaced by a second idx 3 row ...
    path.write_text("".join(lines))
    edit_row(path, 7, predict="1", correct="1", radius="1.5")  # ... correct, radius 1.5
    report_refuses(capsys, tmp_path, f"{path}:7", "idx 3")


def test_report_refuses_an_idx_outside_the_selection(tmp_path: Path, capsys) -> None:
    path = six_rows(tmp_path)
    with open(path, "a") as handle:
        handle.write(path.read_text().splitlines(keepends=True)[1].replace("0\t", "700\t", 1))
    report_refuses(capsys, tmp_path, f"{path}:8", "idx 700")


def test_report_refuses_a_row_of_another_n(tmp_path: Path, capsys) -> None:
    path = six_rows(tmp_path)
    edit_row(path, 3, n="999")
    report_refuses(capsys, tmp_path, f"{path}:3", "n=999")


def test_report_refuses_a_label_that_contradicts_the_row(tmp_path: Path, capsys) -> None:
    path = write_run(tmp_path / "run", "gaussian", 0.25, [(1, 0.2)] * 3, n=200)
    edit_row(path, 2, label="7")  # predict 1, correct 1: the label says it was wrong
    report_refuses(capsys, tmp_path, f"{path}:2", "correct")


@pytest.mark.parametrize("radius", ["nan", "inf", "-inf", "-0.5"])
def test_report_refuses_a_radius_that_is_not_a_finite_number_ge_0(tmp_path: Path, capsys, radius) -> None:
    path = write_run(tmp_path / "run", "gaussian", 0.25, [(1, 0.2)] * 3, n=200)
    edit_row(path, 4, radius=radius)
    report_refuses(capsys, tmp_path, f"{path}:4", "radius")


def test_report_refuses_a_radius_beyond_what_n_and_alpha_can_certify(tmp_path: Path, capsys) -> None:
    # sigma 0.25, n 200, alpha 0.001: at most 0.25 * PhiInv(0.001 ** (1 / 200)) = 0.25 * 2.27 = 0.568
    path = write_run(tmp_path / "run", "gaussian", 0.25, [(1, 0.2)] * 3, n=200)
    edit_row(path, 2, radius="0.6")
    report_refuses(capsys, tmp_path, f"{path}:2", "radius 0.6")


def test_a_file_without_settings_is_shown_as_unknown_and_never_averaged(tmp_path: Path, capsys) -> None:
    write_run(tmp_path / "a", "gaussian", 0.25, [(1, 0.3), (1, 0.2)])
    orphan = write_run(tmp_path / "b", "gaussian", 0.5, [(1, 0.9), (1, 0.8)])
    sidecar_path(orphan).unlink()
    runs, bad = load_runs([tmp_path])
    assert not bad
    by_name = {run.path.parent.name: run for run in runs}
    assert by_name["b"].status == "settings unknown" and by_name["a"].status == "ok"
    _, table = summary_table(runs, RADII)
    assert sorted(row[-1] for row in table) == ["ok", "settings unknown"]
    assert all(cell not in ("-", "") for row in table for cell in row[6:8])  # its own numbers are shown
    assert envelope_table(runs, RADII)[1] == []  # a and b differ in sigma alone, but b's settings are unknown
    assert report_main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    assert "b/certify.tsv: settings unknown" in capsys.readouterr().err


def test_skip_bad_lists_an_invalid_file_and_reports_the_others(tmp_path: Path) -> None:
    write_run(tmp_path / "good", "gaussian", 0.25, [(1, 0.3)])
    bad = write_run(tmp_path / "bad", "gaussian", 0.5, [(1, 0.3), (1, 0.2)])
    edit_row(bad, 3, radius="nan")
    assert report_main([str(tmp_path), "--out", str(tmp_path / "report"), "--skip-bad"]) == 0
    assert "bad/certify.tsv:3" in (tmp_path / "report" / "report.md").read_text()


# ----- resume (items 2 and 9) -----------------------------------------------------------------------


def refused_on_resume(tmp_path: Path, reason: str, **overrides) -> None:
    path = tmp_path / "certify.tsv"
    before = path.read_bytes()
    classifier = CountingClassifier()
    with pytest.raises(ResultFileError, match=reason):
        certify_toy(tmp_path, classifier=classifier, **overrides)
    assert classifier.calls == 0 and path.read_bytes() == before


def test_resume_refuses_an_idx_of_the_split_outside_the_selection(tmp_path: Path) -> None:
    path, _ = certify_toy(tmp_path, skip=2, max=3)  # idx 0 2 4 of 12
    edit_row(path, 3, idx="3")
    refused_on_resume(tmp_path, rf"{path}:3: idx 3 is not", skip=2, max=5)


def test_resume_refuses_rows_that_no_longer_belong_to_a_smaller_selection(tmp_path: Path) -> None:
    path, _ = certify_toy(tmp_path, max=4)
    refused_on_resume(tmp_path, rf"{path}:5: idx 3 is not", max=3)


@pytest.mark.parametrize("radius", ["nan", "inf"])
def test_resume_refuses_a_radius_that_is_not_finite(tmp_path: Path, radius: str) -> None:
    path, _ = certify_toy(tmp_path, max=3)
    edit_row(path, 3, radius=radius)
    refused_on_resume(tmp_path, rf"{path}:3: idx 1 has radius {radius}", max=5)


def test_resume_refuses_a_row_of_another_n(tmp_path: Path) -> None:
    path, _ = certify_toy(tmp_path, max=3)
    edit_row(path, 2, n="999")
    refused_on_resume(tmp_path, rf"{path}:2: .*n=999", max=5)


def test_resume_refuses_a_label_that_contradicts_the_data(tmp_path: Path) -> None:
    path, _ = certify_toy(tmp_path, max=3)
    row = read_results(path)[1]  # idx 1, label 1 in the data
    wrong = (row.label + 1) % 3
    edit_row(path, 3, label=str(wrong), correct=str(int(row.predict == wrong)))
    refused_on_resume(tmp_path, rf"{path}:3: label {wrong}.*the dataset's label of idx 1 is 1", max=5)


class FlatClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    def forward(self, x):
        return self.net(x)


def certify_split(tmp_path: Path, dataset, split_seed: int | None, **overrides) -> Path:
    values = {"sigma": 0.25, "n0": 4, "n": 16, "alpha": 0.01, "batch_size": 20, "progress": False}
    settings = CertifySettings.from_mapping(values | {"output": str(tmp_path / "certify.tsv")} | overrides)
    certifier = build_certifier(
        settings,
        [ClassifierSpec(FlatClassifier(), "test")],
        denoiser=None,
        dataset=dataset,
        dataset_name="mnist5k",
        num_classes=10,
        split_seed=split_seed,
    )
    [path] = certifier.run(dataset)
    return path


def test_resume_on_another_split_seed_is_refused_naming_it(tmp_path: Path) -> None:
    from ddsx.data.mnist5k import MNIST5kDataModule

    def test_set(seed: int):
        datamodule = MNIST5kDataModule(split_seed=seed)
        datamodule.setup("test")
        return datamodule.test_set

    path = certify_split(tmp_path, test_set(0), 0, max=3)
    before = path.read_bytes()
    with pytest.raises(
        SettingsMismatchError, match=r"dataset\.split_seed: the file was made with 0, this run has 1"
    ):
        certify_split(tmp_path, test_set(1), 1, max=6)
    assert path.read_bytes() == before
    certify_split(tmp_path, test_set(0), 0, max=6)  # the same split resumes
    assert [r.idx for r in read_results(path)] == list(range(6))


def test_resume_on_other_examples_under_the_same_seed_is_refused(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(20) % 10
    certify_split(tmp_path, TensorImageDataset(images, labels, indices=list(range(10))), None, max=2)
    other = TensorImageDataset(images, labels, indices=list(range(10, 20)))
    with pytest.raises(SettingsMismatchError, match=r"dataset\.fingerprint"):
        certify_split(tmp_path, other, None, max=4)


# ----- merge (item 3) -------------------------------------------------------------------------------


def test_merge_refuses_shards_of_two_runs_with_another_skip(tmp_path: Path) -> None:
    run_shards(tmp_path / "a", 2, shards=[0])
    run_shards(tmp_path / "b", 2, shards=[1], skip=3)
    out = tmp_path / "out" / "certify.tsv"
    with pytest.raises(ResultFileError, match=r"certify\.skip"):
        merge_shards([tmp_path / "a", tmp_path / "b"], out)
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_merge_refuses_an_idx_rewritten_outside_the_selection_naming_the_shard(tmp_path: Path) -> None:
    first, _ = run_shards(tmp_path / "jobs", 2)
    edit_row(first, 3, idx="700")
    out = tmp_path / "out" / "certify.tsv"
    with pytest.raises(ResultFileError, match=rf"{first}:3: idx 700 is not"):
        merge_shards([tmp_path / "jobs"], out)
    assert not out.exists() and not sidecar_path(out).exists()


def test_a_malformed_radius_in_a_shard_is_refused_before_writing_and_blocks_nothing(tmp_path: Path) -> None:
    first, _ = run_shards(tmp_path / "jobs", 2)
    good = first.read_bytes()
    for bad in ("0.3x", "nan"):
        edit_row(first, 2, radius=bad)
        out = tmp_path / "out" / "certify.tsv"
        with pytest.raises(ResultFileError, match=rf"{first}:2"):
            merge_shards([tmp_path / "jobs"], out)
        assert not out.exists() and not sidecar_path(out).exists()
        first.write_bytes(good)
    [path] = merge_shards([tmp_path / "jobs"], out)  # the failed merges left nothing in the way
    assert [r.idx for r in read_results(path)] == list(range(10))
