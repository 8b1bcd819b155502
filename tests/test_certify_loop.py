"""The shared certification loop (ddsx.smoothing.loop): one segment-sum per batch for every (example,
classifier) count, one host read per look for the whole batch, fixed mode reading only when an
example is decided; and certified_at recorded for the reported radius."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ddsx.certification import CertifySettings, ClassifierSpec, build_certifier, read_results
from ddsx.denoisers.base import IdentityDenoiser

NUM_CLASSES = 3


def make_dataset(size: int = 10):
    g = torch.Generator().manual_seed(3)
    return [(torch.rand(1, 1, 3, generator=g), i % NUM_CLASSES) for i in range(size)]


def make_classifier(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3, NUM_CLASSES)).eval()


def engine(tmp_path: Path, classifiers: int = 3, **overrides):
    values = {"sigma": 0.25, "n0": 16, "n": 1200, "alpha": 0.01, "batch_size": 64, "progress": False}
    values |= {"radii": [0.0, 0.1, 0.2, 0.3], "check_every": 50, "output": str(tmp_path / "c.tsv")}
    specs = [ClassifierSpec(make_classifier(s), "test", name=f"h{s}") for s in range(classifiers)]
    dataset = make_dataset()
    certifier = build_certifier(
        CertifySettings.from_mapping(values | overrides),
        specs,
        denoiser=IdentityDenoiser(0.25),
        dataset=dataset,
        dataset_name="toy",
        num_classes=NUM_CLASSES,
    )
    return certifier, dataset


def test_every_count_of_a_batch_is_one_bincount_and_a_look_is_one_host_read(tmp_path, monkeypatch) -> None:
    certifier, dataset = engine(tmp_path, classifiers=6, mode="sequential", select="n0")
    calls = []
    original = torch.bincount

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "bincount", spy)
    paths = certifier.run(dataset)
    stats = certifier.stats
    assert stats.batches > 20 and len(calls) == stats.batches  # one segment-sum per batch, all pairs
    assert 0 < stats.host_reads <= stats.batches  # at most one read per batch, whatever the pairs
    # A read per pair and look (selection end included) is what deciding pair by pair costs.
    per_pair = sum(1 + r.samples // 50 for p in paths for r in read_results(p))
    assert stats.host_reads < per_pair / 3  # the pairs at a look share one read


def test_fixed_mode_reads_the_counts_only_when_an_example_finishes_a_phase(tmp_path) -> None:
    certifier, dataset = engine(tmp_path, mode="fixed", n=200, batch_size=8)
    certifier.run(dataset)
    stats = certifier.stats
    # Each example is read at most twice (end of selection, end of n), never per batch.
    assert stats.host_reads <= 2 * len(dataset)
    assert stats.batches >= 5 * stats.host_reads
    assert stats.copies == len(dataset) * (16 + 200)


@pytest.mark.parametrize("mode", ["sequential", "union_cp"])
def test_certified_at_is_the_look_at_which_the_reported_radius_was_certified(tmp_path, mode) -> None:
    certifier, dataset = engine(tmp_path, classifiers=1, mode=mode)
    [path] = certifier.run(dataset)
    rows = read_results(path)
    certified = [r for r in rows if r.predict >= 0]
    assert certified and any(r.predict < 0 for r in rows)
    for r in rows:
        if r.predict < 0:
            assert r.certified_at is None
        else:
            assert r.certified_at % 50 == 0 and 0 < r.certified_at <= r.samples
    # Smaller radii can be certified earlier than the reported one, and the point stops later.
    assert any(r.certified_at < r.samples for r in certified) or all(r.radius == 0.3 for r in certified)


def test_fixed_rows_record_n_as_certified_at(tmp_path) -> None:
    certifier, dataset = engine(tmp_path, classifiers=1, mode="fixed", n=200)
    [path] = certifier.run(dataset)
    rows = read_results(path)
    assert {r.certified_at for r in rows if r.predict >= 0} == {200}
    assert all(r.certified_at is None for r in rows if r.predict < 0)


def _rows_without_timing(path: Path) -> list[tuple]:
    return [
        (r.idx, r.predict, r.radius, r.samples, r.count_a, r.p_lower, r.certified_at)
        for r in read_results(path)
    ]


@pytest.mark.parametrize(
    ("mode", "select"), [("sequential", "n0"), ("sequential", "label"), ("union_cp", "n0"), ("fixed", "n0")]
)
def test_drawing_ahead_gives_the_rows_of_the_look_by_look_loop(tmp_path, monkeypatch, mode, select) -> None:
    """Few examples in flight: each draws several looks per batch, and every row (prediction, radius,
    samples, count, certified_at) is the one-look-per-batch loop's, at two batch sizes."""
    from functools import partial

    import ddsx.certification.engine as engine_module
    from ddsx.smoothing.loop import CertifyLoop

    few = {"mode": mode, "select": select, "max": 3, "n0": 16}
    with monkeypatch.context() as patch:
        patch.setattr(engine_module, "CertifyLoop", partial(CertifyLoop, draw_ahead=False))
        reference, dataset = engine(tmp_path / "ref", batch_size=100, **few)
        expected = [_rows_without_timing(p) for p in reference.run(dataset)]
    assert any(r[3] < 1200 for rows in expected for r in rows) or mode == "fixed"  # some stop early
    for batch_size in (300, 1000):
        certifier, dataset = engine(tmp_path / str(batch_size), batch_size=batch_size, **few)
        got = [_rows_without_timing(p) for p in certifier.run(dataset)]
        assert got == expected, batch_size
        stats = certifier.stats
        assert stats.host_reads <= stats.batches  # still one read at most per batch
        # Copies used are those of the look-by-look loop; what is drawn past the stop is extra.
        assert stats.used == reference.stats.copies <= stats.copies
        # Never more copies nor batches than fixed n at the same budget (it fills batches as fixed does).
        fixed, _ = engine(tmp_path / f"fixed{batch_size}", batch_size=batch_size, mode="fixed", max=3, n0=16)
        fixed.run(dataset)
        assert stats.copies <= fixed.stats.copies and stats.batches <= fixed.stats.batches
        if mode != "fixed":
            assert stats.batches < reference.stats.batches  # several looks per batch
