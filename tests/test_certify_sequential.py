"""certify.mode=sequential in the engine: rows equal Smooth.certify_sequential whatever the packing,
several classifiers stop on their own and equal separate runs, the settings record the mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from ddsx.certification import (
    CertifySettings,
    ClassifierSpec,
    SettingsMismatchError,
    build_certifier,
    read_results,
    sidecar_path,
)
from ddsx.denoisers.base import IdentityDenoiser
from ddsx.smoothing import Smooth, example_generator
from ddsx.smoothing.sequential import sequential_plan

NUM_CLASSES = 3
RADII = [0.0, 0.1, 0.2, 0.3]
SEQ = {"sigma": 0.25, "n0": 16, "n": 1200, "alpha": 0.01, "mode": "sequential", "check_every": 50}


class CountingDenoiser(IdentityDenoiser):
    def __init__(self, sigma: float = 0.25) -> None:
        super().__init__(sigma)
        self.images = 0

    def forward(self, x_noisy):
        self.images += len(x_noisy)
        return x_noisy


def make_dataset(size: int = 8):
    g = torch.Generator().manual_seed(3)
    # Three values per image: CPU noise differs with the request size unless drawn in fixed blocks.
    return [(torch.rand(1, 1, 3, generator=g), i % NUM_CLASSES) for i in range(size)]


def make_classifier(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3, NUM_CLASSES)).eval()


def run(tmp_path: Path, classifiers, denoiser=None, **overrides) -> list[Path]:
    return run_engine(tmp_path, classifiers, denoiser, **overrides)[1]


def run_engine(tmp_path: Path, classifiers, denoiser=None, **overrides):
    """(the engine, its result paths) after one run."""
    values = SEQ | {"radii": RADII, "progress": False, "output": str(tmp_path / "certify.tsv")}
    s = CertifySettings.from_mapping(values | overrides)
    specs = [ClassifierSpec(c, "test", name=f"h{i}") for i, c in enumerate(classifiers)]
    dataset = make_dataset()
    engine = build_certifier(
        s, specs, denoiser=denoiser, dataset=dataset, dataset_name="toy", num_classes=NUM_CLASSES
    )
    return engine, engine.run(dataset)


def timeless(path: Path) -> list[tuple]:
    return [
        (r.idx, r.label, r.predict, r.radius, r.correct, r.samples, r.count_a) for r in read_results(path)
    ]


@pytest.mark.parametrize("select", ["label", "n0"])
def test_rows_equal_smooth_certify_sequential_whatever_the_batch_size(tmp_path: Path, select: str) -> None:
    classifier = make_classifier(0)
    [small] = run(tmp_path / "small", [classifier], select=select, batch_size=7)
    [large] = run(tmp_path / "large", [classifier], select=select, batch_size=256)
    assert timeless(small) == timeless(large)
    smooth = Smooth(classifier, NUM_CLASSES, 0.25)
    plan = sequential_plan(0.25, RADII, 0.01, 1200, 50)
    rows = read_results(small)
    for row in rows:
        image, label = make_dataset()[row.idx]
        kwargs = {"label": label} if select == "label" else {"n0": 16}
        cert = smooth.certify_sequential(
            image, plan, batch_size=50, generator=example_generator(0, row.idx), **kwargs
        )
        assert (row.predict, row.radius, row.count_a, row.samples) == (
            cert.prediction,
            cert.radius,
            cert.count,
            cert.samples,
        )
        assert row.n0 == (16 if select == "n0" else 0)
    assert len({r.samples for r in rows}) > 1, "examples must stop at different times for this test"
    assert min(r.samples for r in rows) < 1200


def test_several_classifiers_stop_on_their_own_and_equal_separate_runs(tmp_path: Path) -> None:
    classifiers = [make_classifier(seed) for seed in (0, 1, 2)]
    denoiser = CountingDenoiser()
    engine, paths = run_engine(tmp_path / "together", classifiers, denoiser, batch_size=64)
    for i, classifier in enumerate(classifiers):
        [alone] = run(tmp_path / f"alone{i}", [classifier], CountingDenoiser(), batch_size=64)
        assert timeless(paths[i]) == timeless(alone)
    # The denoiser saw each example until the last classifier decided it, plus what the last examples
    # in flight drew ahead of that look (ddsx.smoothing.loop), and no warm-up batch without progress.
    samples = [[r.samples for r in read_results(p)] for p in paths]
    per_example = [max(row) for row in zip(*samples, strict=True)]
    assert engine.stats.used == sum(per_example) <= engine.stats.copies == denoiser.images
    assert samples[0] != samples[1] or samples[1] != samples[2], "classifiers must stop at different times"


def test_the_settings_record_mode_select_radii_and_check_every(tmp_path: Path) -> None:
    [path] = run(tmp_path, [make_classifier(0)], max=2)
    settings = json.loads(sidecar_path(path).read_text())["settings"]
    assert (settings["mode"], settings["select"], settings["radii"], settings["check_every"]) == (
        "sequential",
        "label",
        RADII,
        50,
    )
    with pytest.raises(SettingsMismatchError, match=r"certify\.check_every"):
        run(tmp_path, [make_classifier(0)], max=2, check_every=100)
    with pytest.raises(SettingsMismatchError, match=r"certify\.mode"):
        run(tmp_path, [make_classifier(0)], max=2, mode="fixed")


def test_fixed_mode_rows_say_how_many_samples_they_used(tmp_path: Path) -> None:
    [path] = run(tmp_path, [make_classifier(0)], mode="fixed", n=100, max=3)
    assert [r.samples for r in read_results(path)] == [100, 100, 100]
    assert json.loads(sidecar_path(path).read_text())["settings"]["mode"] == "fixed"
