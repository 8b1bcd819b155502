"""The certification loop and its result file: resume, torn lines, refusals, shards and merging."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from ddsx.certification import (
    COLUMNS,
    CertifySettings,
    ClassifierSpec,
    ResultFile,
    ResultFileError,
    SettingsMismatchError,
    build_certifier,
    read_results,
    sidecar_path,
)
from tests.conftest import tiny_unet

NUM_CLASSES = 3


def make_dataset(size: int = 12) -> list[tuple[torch.Tensor, int]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.rand(1, 4, 4, generator=g), i % NUM_CLASSES) for i in range(size)]


def make_classifier(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, NUM_CLASSES)).eval()


def settings(**overrides) -> CertifySettings:
    values = {"sigma": 0.25, "n0": 8, "n": 64, "alpha": 0.01, "batch_size": 16, "progress": False} | overrides
    return CertifySettings.from_mapping(values)


def certifier(tmp_path: Path, classifier: nn.Module | None = None, dataset=None, denoiser=None, **overrides):
    s = settings(output=str(tmp_path / "certify.tsv"), **overrides)
    spec = ClassifierSpec(classifier or make_classifier(), "test")
    dataset = dataset or make_dataset()
    return build_certifier(
        s, [spec], denoiser=denoiser, dataset=dataset, dataset_name="toy", num_classes=NUM_CLASSES
    )


def run(tmp_path: Path, classifier: nn.Module | None = None, dataset=None, **overrides) -> Path:
    dataset = dataset or make_dataset()
    [path] = certifier(tmp_path, classifier, dataset, **overrides).run(dataset)
    return path


def stable_fields(path: Path) -> list[tuple]:
    """Rows without the timing columns (time, seconds), which legitimately differ between runs."""
    return [
        (r.idx, r.label, r.predict, r.radius, r.correct, r.samples, r.count_a, r.n, r.n0, r.p_lower, r.sigma)
        for r in read_results(path)
    ]


def test_writes_one_row_per_selected_example_with_settings_beside(tmp_path: Path) -> None:
    path = run(tmp_path, skip=2, max=4)
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == list(COLUMNS)
    rows = read_results(path)
    assert [r.idx for r in rows] == [0, 2, 4, 6]
    for r in rows:
        assert r.correct == int(r.predict == r.label)
        assert r.n == 64 and r.n0 == 8 and r.sigma == 0.25 and r.t_star is None
        assert 0 <= r.count_a <= 64 and (r.radius > 0) == (r.predict != -1 and r.p_lower > 0.5)
    assert sidecar_path(path).is_file()


def test_rows_are_reproducible_and_independent_of_batch_size(tmp_path: Path) -> None:
    a = run(tmp_path / "a", batch_size=5)
    b = run(tmp_path / "b", batch_size=64)
    assert stable_fields(a) == stable_fields(b)


def test_resume_keeps_rows_byte_for_byte_and_redoes_a_torn_line(tmp_path: Path) -> None:
    path = run(tmp_path, max=4)
    before = path.read_bytes()
    with open(path, "ab") as f:
        f.write(b"4\t1\t-1\t0.0")  # a crash in mid-row
    run(tmp_path, max=8)
    after = path.read_bytes()
    assert after.startswith(before)
    assert [r.idx for r in read_results(path)] == list(range(8))
    assert stable_fields(path) == stable_fields(run(tmp_path / "fresh", max=8))


def test_crash_mid_run_then_rerun_completes_each_index_once(tmp_path: Path) -> None:
    class Crashing(nn.Module):
        def __init__(self, inner: nn.Module, calls: int) -> None:
            super().__init__()
            self.inner, self.calls = inner, calls

        def forward(self, x):
            self.calls -= 1
            if self.calls < 0:
                raise KeyboardInterrupt("simulated kill")
            return self.inner(x)

    inner = make_classifier()
    with pytest.raises(KeyboardInterrupt):
        # n0=8 and n=64 in batches of 16: 5 forward passes per example (no timed warm-up batch
        # without progress); die inside the 8th example.
        run(tmp_path, classifier=Crashing(inner, calls=7 * 5))
    assert [r.idx for r in read_results(tmp_path / "certify.tsv")] == list(range(7))
    path = run(tmp_path, classifier=Crashing(inner, calls=10**6))
    assert [r.idx for r in read_results(path)] == list(range(12))
    assert stable_fields(path) == stable_fields(run(tmp_path / "fresh", classifier=inner))


def test_refuses_to_append_with_other_settings_naming_the_setting(tmp_path: Path) -> None:
    path = run(tmp_path, max=2)
    before = path.read_bytes()
    with pytest.raises(SettingsMismatchError, match=r"certify\.sigma.*0\.25.*0\.5"):
        run(tmp_path, sigma=0.5)
    with pytest.raises(SettingsMismatchError, match=r"certify\.n\b"):
        run(tmp_path, n=65)
    with pytest.raises(SettingsMismatchError, match=r"model\.fingerprint"):
        run(tmp_path, classifier=make_classifier(seed=1))
    assert path.read_bytes() == before
    # batch_size, skip and max only choose which rows are made: resuming with others is fine.
    run(tmp_path, max=3, batch_size=7)
    assert len(read_results(path)) == 3


def test_refuses_a_file_without_settings(tmp_path: Path) -> None:
    (tmp_path / "certify.tsv").write_text(
        "idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t1\t1\t0.5\t1\t0:00:01\n"
    )
    with pytest.raises(ResultFileError, match="without certify.settings.json"):
        run(tmp_path)


def thread_broadcast(world_size: int, barrier: threading.Barrier):
    """Fabric's broadcast for ranks simulated by threads: everyone gets rank 0's value."""
    box = {}

    def broadcast(value, rank):
        if rank == 0:
            box["value"] = value
        barrier.wait()
        result = box["value"]
        barrier.wait()
        return result

    return broadcast


def _run_ranks(tmp_path: Path, world_size: int, **overrides) -> Path:
    """world_size processes simulated by threads sharing a barrier and a broadcast."""
    barrier = threading.Barrier(world_size)
    broadcast = thread_broadcast(world_size, barrier)
    results, errors = {}, []
    # Built once: seeding the global RNG from two threads at once would race.
    classifier, dataset = make_classifier(), make_dataset()

    def worker(rank: int) -> None:
        try:
            [results[rank]] = certifier(tmp_path, classifier, dataset, **overrides).run(
                dataset,
                rank=rank,
                world_size=world_size,
                barrier=barrier.wait,
                broadcast=lambda value: broadcast(value, rank),
            )
        except Exception as error:  # surfaced below
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results[0]


def test_shards_of_several_processes_merge_into_the_single_process_rows(tmp_path: Path) -> None:
    merged = _run_ranks(tmp_path / "two", world_size=2)
    single = run(tmp_path / "one")
    assert [r.idx for r in read_results(merged)] == list(range(12))
    assert stable_fields(merged) == stable_fields(single)
    assert not ResultFile(merged).shard_paths()


def test_leftover_shards_of_a_crashed_run_are_merged_by_the_next_run(tmp_path: Path) -> None:
    path = run(tmp_path, max=5)  # writes idx 0..4 into certify.tsv
    lines = path.read_bytes().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    store = ResultFile(path)
    path.write_bytes(header + rows[0])  # pretend: rank 0 merged nothing yet ...
    store.shard_path(0).write_bytes(header + rows[2] + rows[4][:5])  # ... rank 0's shard, torn
    store.shard_path(1).write_bytes(header + rows[1] + rows[3])
    run(tmp_path, max=6)
    final = path.read_bytes().splitlines(keepends=True)
    assert [r.idx for r in read_results(path)] == list(range(6))
    assert final[1:5] == rows[:4]  # kept byte for byte
    assert not store.shard_paths()


def test_diffusion_denoiser_t_star_is_recorded_in_rows_and_settings(tmp_path: Path) -> None:
    diffusers = pytest.importorskip("diffusers")
    from ddsx.certification.build import build_denoiser
    from ddsx.denoisers.dds import DiffusionDenoiser

    unet = tiny_unet(sample_size=4)
    abar = diffusers.DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    denoiser = build_denoiser(None, 0.25)
    assert denoiser.describe()["name"] == "none"
    denoiser = DiffusionDenoiser(unet, abar, sigma=0.5)
    denoiser.set_sigma(0.25)  # what build_denoiser does for a configured one
    engine = certifier(tmp_path, denoiser=denoiser, max=2, n=16, n0=4)
    [path] = engine.run(make_dataset())
    t_star = denoiser.describe()["t_star"]
    assert t_star > 0 and engine.targets[0].identity["denoiser"]["t_star"] == t_star
    assert [r.t_star for r in read_results(path)] == [t_star, t_star]


@pytest.mark.parametrize("shape", [(1, 4, 4), (1, 1, 3)])
def test_packed_rows_equal_smooth_certify_one_example_at_a_time(tmp_path: Path, shape) -> None:
    """Packing cuts each example's noise into other chunks than Smooth's batches; the samples must not
    change. With 3 values per image, CPU randn gives other numbers when asked in other sizes: only
    drawing in the fixed noise blocks keeps them equal."""
    from ddsx.smoothing import Smooth, example_generator

    g = torch.Generator().manual_seed(0)
    dataset = [(torch.rand(*shape, generator=g), i % NUM_CLASSES) for i in range(12)]
    torch.manual_seed(0)
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), NUM_CLASSES)).eval()
    # batch 20: selection chunks of 3 examples share a batch, test chunks straddle batches
    rows = read_results(run(tmp_path, classifier, dataset, max=5, batch_size=20))
    smooth = Smooth(classifier, NUM_CLASSES, 0.25)
    for row in rows:
        image, _ = dataset[row.idx]
        cert = smooth.certify(image, 8, 64, 0.01, 16, generator=example_generator(0, row.idx))
        assert (row.predict, row.count_a, row.radius, row.p_lower) == (
            cert.prediction,
            cert.count,
            cert.radius,
            cert.p_lower,
        )


@pytest.mark.e2e
def test_the_certification_package_never_imports_the_report_package() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ddsx.certification, ddsx.certification.callback, ddsx.cli.certify;"
        "print(sorted(m for m in sys.modules if m.startswith('ddsx.report')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
