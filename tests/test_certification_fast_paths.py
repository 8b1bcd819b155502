"""Fast paths of the certification engine: same certificates in full precision, recorded when not."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from ddsx.certification import CertifySettings, ClassifierSpec, build_certifier, read_results, sidecar_path
from ddsx.certification import autotune as autotune_module
from ddsx.certification.autotune import Trial, autotune_batch_size, candidates_for, format_trials
from ddsx.certification.fast_paths import CompiledOrEager, resolve_autocast_name
from ddsx.denoisers.dds import DiffusionDenoiser
from ddsx.models.classifiers import lenet
from tests.conftest import tiny_unet

NUM_CLASSES = 10


def digits(size: int = 3) -> list[tuple[torch.Tensor, int]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.rand(1, 28, 28, generator=g), i % NUM_CLASSES) for i in range(size)]


def classifier(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return lenet(NUM_CLASSES, 1).eval()


def denoiser() -> DiffusionDenoiser:
    abar = torch.linspace(0.9999, 0.01, 200).cumprod(0).clamp_min(1e-4)
    return DiffusionDenoiser(tiny_unet(28), abar, sigma=0.25)


def certify(tmp_path: Path, name: str, *, with_denoiser: bool = False, dataset=None, **overrides) -> Path:
    values = {
        "sigma": 0.25,
        "n0": 16,
        "n": 200,
        "alpha": 0.01,
        "batch_size": 64,
        "progress": False,
        "output": str(tmp_path / f"{name}.tsv"),
    } | overrides
    dataset = dataset or digits()
    engine = build_certifier(
        CertifySettings.from_mapping(values),
        [ClassifierSpec(classifier(), "test")],
        denoiser=denoiser() if with_denoiser else None,
        dataset=dataset,
        dataset_name="toy",
        num_classes=NUM_CLASSES,
    )
    [path] = engine.run(dataset)
    return path


def certificates(path: Path) -> list[tuple]:
    return [(r.idx, r.predict, r.radius, r.count_a, r.n, r.n0) for r in read_results(path)]


def settings_of(path: Path) -> dict:
    return json.loads(sidecar_path(path).read_text())


# ----- full-precision fast paths change nothing ------------------------------------------------------


@pytest.mark.parametrize("with_denoiser", [False, True], ids=["lenet", "tiny_unet+lenet"])
def test_channels_last_gives_the_same_certificates(tmp_path: Path, with_denoiser: bool) -> None:
    plain = certify(tmp_path, "plain", with_denoiser=with_denoiser)
    fast = certify(tmp_path, "fast", with_denoiser=with_denoiser, channels_last=True, pin_memory=True)
    assert certificates(fast) == certificates(plain)
    assert len(certificates(plain)) == 3


@pytest.mark.e2e
def test_compiled_lenet_gives_the_same_certificates_and_is_recorded(tmp_path: Path) -> None:
    plain = certify(tmp_path, "plain")
    compiled = certify(tmp_path, "compiled", compile=True)
    assert certificates(compiled) == certificates(plain)
    assert settings_of(compiled)["settings"]["compile"] is True
    assert "compile" not in settings_of(plain)["settings"]  # files made without it stay comparable


@pytest.mark.slow
def test_compiled_denoiser_pipeline_gives_the_same_certificates(tmp_path: Path) -> None:
    plain = certify(tmp_path, "plain", with_denoiser=True)
    compiled = certify(tmp_path, "compiled", with_denoiser=True, compile=True, channels_last=True)
    assert certificates(compiled) == certificates(plain)


@pytest.mark.e2e
def test_a_compiled_file_is_not_resumed_eagerly(tmp_path: Path) -> None:
    from ddsx.certification import SettingsMismatchError

    certify(tmp_path, "run", compile=True, max=1)
    with pytest.raises(SettingsMismatchError, match="compile"):
        certify(tmp_path, "run", compile=False)


def test_compile_failure_falls_back_to_eager_with_one_logged_line(
    monkeypatch, caplog, tmp_path: Path
) -> None:
    def broken_compile(module):
        def call(x):
            raise RuntimeError("inductor: no C++ compiler\nlong trace")

        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    plain = certify(tmp_path, "plain")
    with caplog.at_level(logging.WARNING, logger="ddsx.certification.fast_paths"):
        fallback = certify(tmp_path, "fallback", compile=True)
    assert certificates(fallback) == certificates(plain)
    warnings = [r.getMessage() for r in caplog.records if "torch.compile" in r.getMessage()]
    assert len(warnings) == 1 and "no C++ compiler" in warnings[0] and "long trace" not in warnings[0]


def test_compiled_or_eager_propagates_an_error_of_the_model_itself(monkeypatch) -> None:
    monkeypatch.setattr(torch, "compile", lambda module: module)

    def bad_model(x):
        raise ValueError("wrong input shape")

    with pytest.raises(ValueError, match="wrong input shape"):
        CompiledOrEager(bad_model, "bad")(torch.zeros(1))


# ----- autocast -------------------------------------------------------------------------------------


def test_autocast_auto_is_resolved_before_it_is_recorded(tmp_path: Path) -> None:
    expected = "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    assert resolve_autocast_name("auto", torch.device("cpu")) == expected
    path = certify(tmp_path, "auto", autocast_dtype="auto", max=1)
    assert settings_of(path)["settings"]["autocast_dtype"] == expected
    assert resolve_autocast_name("float16", torch.device("cpu")) == "float16"  # explicit stays


# ----- batch_size=auto --------------------------------------------------------------------------------


def test_batch_size_auto_is_timed_recorded_and_changes_no_certificate(tmp_path: Path, caplog) -> None:
    plain = certify(tmp_path, "plain")
    with caplog.at_level(logging.INFO, logger="ddsx.certification.engine"):
        tuned = certify(tmp_path, "tuned", batch_size="auto")
    assert certificates(tuned) == certificates(plain)
    info = settings_of(tuned)["info"]
    sizes = [row["batch_size"] for row in info["batch_size_autotune"]]
    assert info["batch_size"] in sizes and sizes == sorted(sizes)
    assert all(s <= 3 * (16 + 200) for s in sizes)  # never more than all the copies of the run
    assert any("<- chosen" in r.getMessage() for r in caplog.records)


def test_autotune_picks_the_fastest_and_stops_at_out_of_memory(monkeypatch) -> None:
    # Synthetic timings: images/s rises to 256 then falls; 2048 does not fit.
    rate = {64: 100.0, 128: 300.0, 256: 500.0, 512: 450.0, 1024: 400.0}
    ran: list[int] = []

    def run_batch(size: int) -> None:
        ran.append(size)
        if size == 2048:
            raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(autotune_module, "_timed", lambda run, size, device: size / rate[size])
    chosen, trials = autotune_batch_size(
        run_batch, (64, 128, 256, 512, 1024, 2048, 4096), torch.device("cpu")
    )
    assert chosen == 256
    assert trials[-1] == Trial(2048, None, "out of memory") and 4096 not in ran
    assert "256" in format_trials(trials, chosen).splitlines()[3] and "<- chosen" in format_trials(
        trials, 256
    )


def test_autotune_stops_after_two_clearly_slower_candidates_in_a_row(monkeypatch) -> None:
    rate = {16: 500.0, 32: 300.0, 64: 900.0, 128: 600.0, 256: 500.0, 512: 2000.0}
    monkeypatch.setattr(autotune_module, "_timed", lambda run, size, device: size / rate[size])
    chosen, trials = autotune_batch_size(lambda size: None, tuple(rate), torch.device("cpu"))
    # 32 alone is slow (a busy moment): the search goes on; 128 and 256 both are: it stops there.
    assert (chosen, [t.batch_size for t in trials]) == (64, [16, 32, 64, 128, 256])


def test_candidates_never_exceed_the_limit() -> None:
    assert candidates_for(torch.device("cpu"), limit=100) == (16, 32, 64)
    assert candidates_for(torch.device("cpu"), limit=10) == (10,)
    assert max(candidates_for(torch.device("cuda"))) >= 4096
