"""Many classifiers behind one denoiser: one denoiser pass per noisy batch, rows equal to separate runs,
independent result files; the ddsx-certify side (checkpoint lists, refusals, the denoiser line)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from ddsx.certification import CertifySettings, ClassifierSpec, build_certifier, read_results, sidecar_path
from ddsx.cli.certify import certify
from ddsx.cli.certify_models import ModelMismatchError
from ddsx.denoisers.base import IdentityDenoiser
from tests.test_certification_cli import write_checkpoint

NUM_CLASSES = 3


class CountingDenoiser(IdentityDenoiser):
    """Identity plus a little deterministic change, counting its calls and the images it saw."""

    def __init__(self, sigma: float = 0.25) -> None:
        super().__init__(sigma)
        self.calls = self.images = 0

    def forward(self, x_noisy):
        self.calls += 1
        self.images += len(x_noisy)
        return x_noisy.clamp(0, 1)


def make_dataset(size: int = 10):
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(1, 4, 4, generator=g), i % NUM_CLASSES) for i in range(size)]


def make_classifier(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, NUM_CLASSES)).eval()


def engine(tmp_path: Path, classifiers: list[nn.Module], denoiser, **overrides):
    values = {"sigma": 0.25, "n0": 8, "n": 48, "alpha": 0.01, "batch_size": 24, "progress": False}
    s = CertifySettings.from_mapping(values | {"output": str(tmp_path / "certify.tsv")} | overrides)
    specs = [ClassifierSpec(c, "test", name=f"h{i}") for i, c in enumerate(classifiers)]
    return build_certifier(
        s, specs, denoiser=denoiser, dataset=make_dataset(), dataset_name="toy", num_classes=NUM_CLASSES
    )


def timeless(path: Path) -> list[tuple]:
    return [
        (r.idx, r.label, r.predict, r.radius, r.correct, r.samples, r.count_a, r.p_lower)
        for r in read_results(path)
    ]


def test_rows_equal_separate_runs_and_the_denoiser_runs_once_per_batch(tmp_path: Path) -> None:
    classifiers = [make_classifier(seed) for seed in (0, 1, 2)]
    denoiser = CountingDenoiser()
    together = engine(tmp_path / "together", classifiers, denoiser)
    paths = together.run(make_dataset())
    assert [p.name for p in paths] == ["certify.h0.tsv", "certify.h1.tsv", "certify.h2.tsv"]
    batches, images = denoiser.calls, denoiser.images
    # 10 examples x (8 + 48) noisy copies, denoised once each (no warm-up batch without progress).
    assert images == 10 * (8 + 48)
    assert batches == -(-10 * (8 + 48) // 24)
    for i, classifier in enumerate(classifiers):
        alone = engine(tmp_path / f"alone{i}", [classifier], CountingDenoiser())
        [path] = alone.run(make_dataset())
        assert timeless(paths[i]) == timeless(path)
        assert sidecar_path(paths[i]).is_file()
    assert timeless(paths[0]) != timeless(paths[1])


def test_each_classifier_resumes_independently(tmp_path: Path) -> None:
    classifiers = [make_classifier(seed) for seed in (0, 1)]
    first = engine(tmp_path, classifiers, CountingDenoiser(), max=6).run(make_dataset())
    # One file loses its last rows, as if that classifier had been stopped earlier.
    lines = first[1].read_bytes().splitlines(keepends=True)
    first[1].write_bytes(b"".join(lines[:3]))
    denoiser = CountingDenoiser()
    engine(tmp_path, classifiers, denoiser, max=6).run(make_dataset())
    assert [r.idx for r in read_results(first[0])] == list(range(6))
    assert [r.idx for r in read_results(first[1])] == list(range(6))
    # Only the 4 examples missing from the second file were sampled again (+ warm-up).
    assert denoiser.images == 4 * (8 + 48)
    alone = engine(tmp_path / "alone", [classifiers[1]], CountingDenoiser(), max=6).run(make_dataset())
    assert timeless(first[1]) == timeless(alone[0])


# ----- ddsx-certify ------------------------------------------------------------------------------------


def test_a_list_of_checkpoints_is_certified_in_one_run(compose_certify, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_checkpoint(tmp_path / "a" / "last.ckpt", sigma=0.5)
    b = write_checkpoint(tmp_path / "b" / "last.ckpt", sigma=0.5)
    paths = certify(compose_certify(f"ckpt_path=[{a},{b}]", "certify.max=2"))
    assert [p.name for p in paths] == ["certify.a.tsv", "certify.b.tsv"]
    assert all(len(read_results(p)) == 2 for p in paths)
    assert str(a.resolve()) in sidecar_path(paths[0]).read_text()
    # A sweep folder: every last.ckpt below it.
    swept = certify(
        compose_certify(f"ckpt_path={tmp_path}", "certify.max=2", "certify.output=" + str(tmp_path / "s.tsv"))
    )
    assert [p.name for p in swept] == ["s.a.tsv", "s.b.tsv"]


def test_checkpoints_that_differ_in_sigma_are_refused_naming_it(compose_certify, tmp_path: Path) -> None:
    a = write_checkpoint(tmp_path / "a.ckpt", sigma=0.5)
    b = write_checkpoint(tmp_path / "b.ckpt", sigma=0.25)
    with pytest.raises(ModelMismatchError, match=rf"{b}.*differs.*sigma"):
        certify(compose_certify(f"ckpt_path=[{a},{b}]", "certify.max=1"))


def test_classifier_of_another_architecture_than_the_checkpoint_fails_with_both_names(
    compose_certify, tmp_path: Path
) -> None:
    ckpt = write_checkpoint(tmp_path / "last.ckpt")
    with pytest.raises(ModelMismatchError, match=r"resnet110.*lenet|lenet.*resnet110"):
        certify(compose_certify(f"ckpt_path={ckpt}", "classifier=resnet110", "certify.max=1"))
    assert read_results(certify(compose_certify(f"ckpt_path={ckpt}", "classifier=lenet", "certify.max=1"))[0])


def test_without_denoiser_one_line_says_which_denoiser_and_why(
    compose_certify, tmp_path: Path, caplog
) -> None:
    ckpt = write_checkpoint(tmp_path / "last.ckpt")
    with caplog.at_level(logging.INFO, logger="ddsx.cli.certify"):
        certify(compose_certify(f"ckpt_path={ckpt}", "certify.max=1"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("denoiser:")]
    assert lines == [
        "denoiser: none, the classifier sees the noisy images (the checkpoint was trained without one; "
        "set denoiser= to add one)"
    ]
