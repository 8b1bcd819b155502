"""Result files under attack and carelessness: one writer, validation before work, a resume identity
that notices every setting that changes a certificate, huge budgets, subsets' idx (issue 9)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ddsx.certification import (
    CertifySettings,
    ClassifierSpec,
    InvalidSettingError,
    ResultFile,
    ResultFileError,
    ResultFileLockedError,
    SettingsMismatchError,
    build_certifier,
    read_results,
    sidecar_path,
)
from ddsx.denoisers.base import IdentityDenoiser
from ddsx.models.classifiers.input_adapter import AdaptedClassifier, InputAdapter
from ddsx.models.identity import records_arguments

NUM_CLASSES = 3


class ToyData(list):
    """A list of (image, label) with an optional transform recorded like a real dataset's."""

    transform: Any = None


def make_dataset(size: int = 12, transform: Any = None) -> ToyData:
    g = torch.Generator().manual_seed(0)
    data = ToyData((torch.rand(1, 4, 4, generator=g), i % NUM_CLASSES) for i in range(size))
    data.transform = transform
    return data


class CountingClassifier(nn.Module):
    def __init__(self, input_size: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = AdaptedClassifier(
            InputAdapter([0.5], [0.5], input_size), nn.Sequential(nn.Flatten(), nn.LazyLinear(NUM_CLASSES))
        )
        self.net(torch.zeros(1, 1, 4, 4))  # materialise the lazy layer
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


class KnobDenoiser(IdentityDenoiser):
    """An identity with the knobs of a diffusion denoiser, recording them as a user's denoiser would."""

    @records_arguments(uncompared=("sigma", "path"))
    def __init__(self, sigma=0.25, num_steps=1, t_star_rule="closest", pad_mode="reflect", path="/a"):
        super().__init__(sigma)
        self.num_steps, self.t_star_rule, self.pad_mode, self.path = num_steps, t_star_rule, pad_mode, path

    def describe(self) -> dict[str, Any]:
        # pad_mode is left out on purpose: the identity knows it as a constructor argument.
        return {
            "name": "knob",
            "t_star": 7,
            "num_steps": self.num_steps,
            "t_star_rule": self.t_star_rule,
            "source": self.path,
        }


def run(
    tmp_path: Path, classifier=None, dataset=None, denoiser=None, **overrides
) -> tuple[Path, CountingClassifier]:
    values = {"sigma": 0.25, "n0": 4, "n": 32, "alpha": 0.01, "batch_size": 16, "progress": False}
    s = CertifySettings.from_mapping(values | {"output": str(tmp_path / "certify.tsv")} | overrides)
    classifier = classifier or CountingClassifier()
    dataset = dataset if dataset is not None else make_dataset()
    engine = build_certifier(
        s,
        [ClassifierSpec(classifier, "test")],
        denoiser=denoiser,
        dataset=dataset,
        dataset_name="toy",
        num_classes=NUM_CLASSES,
    )
    [path] = engine.run(dataset)
    return path, classifier


# ----- one writer -----------------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_second_writer_fails_at_once_naming_the_file_and_the_holders_pid(tmp_path: Path) -> None:
    path, _ = run(tmp_path, max=2)
    before = path.read_bytes()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from ddsx.certification import ResultFile;"
            f"lock = ResultFile({str(path)!r}).lock(); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        classifier = CountingClassifier()
        start = time.monotonic()
        with pytest.raises(ResultFileLockedError, match=rf"{path}.*pid {holder.pid}"):
            run(tmp_path, classifier=classifier, max=6)
        assert time.monotonic() - start < 10  # at once, not after the work
        assert classifier.calls == 0 and path.read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    # The OS released the dead holder's lock: the same command now resumes (the stale file is taken
    # over), and its clean end removes the lock file.
    assert path.with_name(path.name + ".lock").read_text().strip() == str(holder.pid)
    run(tmp_path, max=6)
    assert [r.idx for r in read_results(path)] == list(range(6))
    assert not path.with_name(path.name + ".lock").exists()


def test_the_lock_is_released_after_a_run_and_after_a_failure(tmp_path: Path) -> None:
    path, _ = run(tmp_path, max=2)
    lock_file = path.with_name(path.name + ".lock")
    assert not lock_file.exists()  # a finished run leaves no lock file behind
    with ResultFile(path).lock():
        with pytest.raises(ResultFileLockedError):
            run(tmp_path, max=3)
        assert lock_file.exists()  # the refused run did not remove the holder's lock
    with ResultFile(path).lock(), pytest.raises(ResultFileLockedError):
        ResultFile(path).lock()  # one lock at a time, also when the file was removed and made anew
    run(tmp_path, max=3)  # released: works again
    with pytest.raises(SettingsMismatchError):
        run(tmp_path, max=3, n=33)
    with ResultFile(path).lock():  # a refused run released its lock too
        pass


# ----- validation before any work ---------------------------------------------------------------


def _rows(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize(
    ("damage", "line", "message"),
    [
        (lambda rows: rows[:2] + [b"\n"] + rows[2:], 3, "blank line"),
        (lambda rows: rows[:2] + [rows[2].replace(b"\t", b"\tx", 1)] + rows[3:], 3, "cannot parse"),
        (lambda rows: rows + [b"99" + rows[1][1:]], 5, "idx 99 is not an example"),
        (lambda rows: rows + [rows[2].replace(b"\t0:00:", b"\t9:00:", 1)], 5, "again with different content"),
        (lambda rows: [b"idx\tlabel\n"] + rows[1:], 1, "not a certification file header"),
    ],
)
def test_a_damaged_file_is_refused_before_any_work_naming_file_and_line(
    tmp_path: Path, damage, line: int, message: str
) -> None:
    path, _ = run(tmp_path, max=3)
    path.write_bytes(b"".join(damage(_rows(path))))
    before = path.read_bytes()
    classifier = CountingClassifier()
    with pytest.raises(ResultFileError, match=rf"{path}:{line}.*{message}|{path}:{line}: {message}"):
        run(tmp_path, classifier=classifier, max=6)
    assert classifier.calls == 0, "validation must come before any work"
    assert path.read_bytes() == before, "a refused file is left as it was"


def test_identical_duplicates_are_merged_and_a_torn_last_line_repaired(tmp_path: Path) -> None:
    path, _ = run(tmp_path, max=3)
    rows = _rows(path)
    path.write_bytes(b"".join(rows + [rows[2], rows[1][:7]]))  # idx 1 again, then a torn row
    run(tmp_path, max=4)
    assert [r.idx for r in read_results(path)] == [0, 1, 2, 3]
    assert _rows(path)[:4] == rows


def test_a_missing_sidecar_is_refused(tmp_path: Path) -> None:
    path, _ = run(tmp_path, max=2)
    sidecar_path(path).unlink()
    with pytest.raises(ResultFileError, match="without certify.settings.json"):
        run(tmp_path, max=3)


# ----- the resume identity -------------------------------------------------------------------------


def _refused(tmp_path: Path, field: str, **changed) -> None:
    path = tmp_path / "certify.tsv"
    before = path.read_bytes()
    with pytest.raises(SettingsMismatchError, match=rf"\b{field}\b"):
        run(tmp_path, **changed)
    assert path.read_bytes() == before


def test_every_setting_that_changes_a_certificate_is_in_the_identity(tmp_path: Path, monkeypatch) -> None:
    run(tmp_path, denoiser=KnobDenoiser(), max=2)
    run(tmp_path, denoiser=KnobDenoiser(path="/elsewhere"), max=3)  # the path alone is not a change
    _refused(tmp_path, "denoiser.num_steps", denoiser=KnobDenoiser(num_steps=4), max=3)
    _refused(tmp_path, "denoiser.t_star_rule", denoiser=KnobDenoiser(t_star_rule="ceil"), max=3)
    _refused(tmp_path, "denoiser.arguments.pad_mode", denoiser=KnobDenoiser(pad_mode="zeros"), max=3)
    _refused(
        tmp_path,
        "model.parts.net.adapter.arguments.input_size",
        denoiser=KnobDenoiser(),
        classifier=CountingClassifier(8),
    )
    _refused(tmp_path, "certify.data", denoiser=KnobDenoiser(), dataset=make_dataset(transform="Resize(8)"))
    _refused(tmp_path, "certify.autocast_dtype", denoiser=KnobDenoiser(), autocast_dtype="bfloat16")
    monkeypatch.setattr("ddsx.smoothing.noise.NOISE_BLOCK_ELEMENTS", {"cpu": 1 << 10})
    _refused(tmp_path, "certify.noise_block_size", denoiser=KnobDenoiser(), max=3)
    monkeypatch.undo()
    sidecar = sidecar_path(tmp_path / "certify.tsv")
    document = json.loads(sidecar.read_text())
    assert document["settings"]["device_type"] == "cpu"
    document["settings"]["device_type"] = "cuda"  # as if the file had been made on a GPU
    sidecar.write_text(json.dumps(document))
    _refused(tmp_path, "certify.device_type", denoiser=KnobDenoiser(), max=3)


# ----- budget, time estimate, subsets ----------------------------------------------------------------


def test_a_budget_over_a_billion_forward_passes_needs_allow_huge(tmp_path: Path) -> None:
    classifier = CountingClassifier()
    with pytest.raises(InvalidSettingError, match=r"certify\.allow_huge=true"):
        run(tmp_path, classifier=classifier, n=10**12)
    assert classifier.calls == 0 and not (tmp_path / "certify.tsv").exists()
    CertifySettings(sigma=0.5, n=10**12, allow_huge=True).check_budget(12)  # allowed when meant


def test_the_estimated_total_time_is_logged_before_the_first_example(tmp_path: Path, caplog) -> None:
    order = []

    class Recording(CountingClassifier):
        def forward(self, x):
            order.append(("forward", len(caplog.records)))
            return super().forward(x)

    with caplog.at_level(logging.INFO, logger="ddsx.certification.engine"):
        run(tmp_path / "quiet", classifier=Recording(), max=3)
    assert not any("estimated total time" in r.getMessage() for r in caplog.records)
    order.clear()  # progress off (the default here): no warm-up batch and no estimate
    with caplog.at_level(logging.INFO, logger="ddsx.certification.engine"):
        run(tmp_path / "shown", classifier=Recording(), max=3, progress=True)
    estimates = [i for i, r in enumerate(caplog.records) if "estimated total time" in r.getMessage()]
    assert len(estimates) == 1
    # Two warm-up batches (one untimed) come before the line; every certification batch after it.
    assert [seen for _, seen in order[:2]] == [estimates[0], estimates[0]]
    assert all(seen > estimates[0] for _, seen in order[2:])


def test_rows_of_a_subset_carry_the_index_in_the_full_split(tmp_path: Path) -> None:
    full = make_dataset()
    subset = ToyData(full[i] for i in (5, 7, 9))
    subset.source_indices = [5, 7, 9]
    sub_path, _ = run(tmp_path / "sub", dataset=subset)
    full_path, _ = run(tmp_path / "full", dataset=full)
    rows = read_results(sub_path)
    assert [r.idx for r in rows] == [5, 7, 9]

    def timeless(r):
        return (r.idx, r.label, r.predict, r.radius, r.count_a, r.p_lower)

    by_idx = {r.idx: timeless(r) for r in read_results(full_path)}
    assert [timeless(r) for r in rows] == [by_idx[i] for i in (5, 7, 9)]  # same noise seed: same rows


def test_the_denoiser_path_is_recorded_for_reports_but_not_compared(tmp_path: Path) -> None:
    path, _ = run(tmp_path, denoiser=KnobDenoiser(path="/denoisers/mnist5k_ddpm"), max=1)
    document = json.loads(sidecar_path(path).read_text())
    assert document["info"]["denoiser"]["source"] == "/denoisers/mnist5k_ddpm"
    assert "source" not in document["denoiser"]
