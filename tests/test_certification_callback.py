"""The certify callback at the end of ddsx-train: certifies, logs cert/* metrics, leaves the module alone."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from ddsx.certification import read_results, sidecar_path
from ddsx.certification.callback import CertifyCallback
from ddsx.certification.row_validation import largest_certifiable_radius
from ddsx.cli.train import build_training, resume_checkpoint
from ddsx.denoisers import IdentityDenoiser

CHEAP = [
    "certify.n0=4",
    "certify.n=40",
    "certify.batch_size=40",
    "certify.skip=20",
    "certify.max=5",
    "certify.progress=false",
]


def _fit(compose_train, *overrides: str, fit_from_last: bool = False):
    cfg = compose_train(
        "dataset=digits",
        "debug=limit",
        "logger=csv",
        "trainer.max_epochs=1",
        "test=false",
        "method=gaussian",
        "sigma=0.5",
        "callbacks=certify",
        *CHEAP,
        *overrides,
    )
    datamodule, model, trainer = build_training(cfg)
    # fit_from_last: what ddsx-train does when run again in the same run folder (continue the run)
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg) if fit_from_last else None)
    return cfg, model, trainer


def _callback(trainer) -> CertifyCallback:
    return next(c for c in trainer.callbacks if isinstance(c, CertifyCallback))


def test_certifies_the_best_checkpoint_and_logs_cert_metrics(compose_train) -> None:
    cfg, model, trainer = _fit(compose_train)
    path = Path(cfg.paths.output_dir) / "certify.tsv"
    rows = read_results(path)
    assert [r.idx for r in rows] == [0, 20, 40, 60, 80]
    assert all(r.sigma == 0.5 for r in rows)  # the module's sigma
    metrics = _callback(trainer).metrics
    # n = 40 at alpha 0.001 certify at most 0.5 * PhiInv(0.001 ** (1 / 40)) = 0.5001: no accuracy is
    # logged past it (a missing value, as the report's "-"), not a 0.0 no classifier could beat.
    assert largest_certifiable_radius(0.5, 40, 0.001) == pytest.approx(0.5001, abs=1e-4)
    expected = {f"cert/acc@{r}" for r in ("0", "0.25", "0.5")} | {
        "cert/acr",
        "cert/abstain",
        "cert/clean_acc",
        "cert/examples",
        "cert/samples_mean",
    }
    assert set(metrics) == expected
    assert metrics["cert/acc@0"] == pytest.approx(sum(r.correct for r in rows) / 5)
    assert metrics["cert/acr"] == pytest.approx(sum(r.radius * r.correct for r in rows) / 5)
    # noisy copies per example after the n0 selection: n in fixed mode
    assert metrics["cert/samples_mean"] == sum(r.samples for r in rows) / 5 == rows[0].n
    assert "checkpoints" in sidecar_path(path).read_text()  # the best checkpoint was certified
    logged = list(csv.DictReader(open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv")))
    assert any(row.get("cert/acr") for row in logged)
    assert float(trainer.callback_metrics["cert/acr"]) == pytest.approx(metrics["cert/acr"])
    assert model.classifier.training  # certification left the module's mode as it was


def test_a_continued_run_certifies_its_new_weights_into_a_file_named_by_their_fingerprint(
    compose_train, caplog
) -> None:
    last = ("callbacks.certify.weights=last",)
    cfg, _, _ = _fit(compose_train, *last)
    first = Path(cfg.paths.output_dir) / "certify.tsv"
    before = first.read_bytes()
    old = json.loads(sidecar_path(first).read_text())["model"]["fingerprint"]

    def continued() -> Path:  # the same command with one more epoch, in the same run folder
        cfg, model, trainer = _fit(compose_train, *last, "trainer.max_epochs=2", fit_from_last=True)
        assert trainer.current_epoch == 2
        return _callback(trainer).result_path

    with caplog.at_level(logging.INFO, logger="ddsx"):
        second = continued()
    new = json.loads(sidecar_path(second).read_text())["model"]["fingerprint"]
    assert new != old and second == first.with_name(f"certify_{new[:8]}.tsv")
    assert [r.idx for r in read_results(second)] == [0, 20, 40, 60, 80]
    assert first.read_bytes() == before  # the earlier weights' rows are left as they were
    said = [r.getMessage() for r in caplog.records if "other weights" in r.getMessage()]
    assert len(said) == 1 and str(first) in said[0] and str(second) in said[0]
    rows = second.read_bytes()
    assert continued() == second and second.read_bytes() == rows  # the same weights again: resumed, done


def test_settings_are_validated_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"certify\.n0"):
        CertifyCallback({"n0": 0, "output": str(tmp_path / "c.tsv")})
    with pytest.raises(ValueError, match="unknown certify setting"):
        CertifyCallback({"nn": 5, "output": str(tmp_path / "c.tsv")})
    callback = CertifyCallback({"n": 10, "output": str(tmp_path / "c.tsv")}, max=3, weights="last")
    assert callback.settings.max_examples == 3 and callback.settings.n == 10


class SigmaRecordingDenoiser(IdentityDenoiser):
    """Identity that remembers the sigma it was tuned to at each call (t* follows sigma in DDS)."""

    seen: list[float] = []

    def forward(self, x_noisy):
        SigmaRecordingDenoiser.seen.append(self.sigma)
        return x_noisy


def test_denoiser_follows_certify_sigma_then_returns_to_training_sigma(compose_train) -> None:
    SigmaRecordingDenoiser.seen = []
    target = f"{__name__}.{SigmaRecordingDenoiser.__name__}"
    cfg, model, trainer = _fit(compose_train, f"denoiser._target_={target}", "certify.sigma=0.25")
    rows = read_results(Path(cfg.paths.output_dir) / "certify.tsv")
    assert all(r.sigma == 0.25 for r in rows)
    assert SigmaRecordingDenoiser.seen[-1] == 0.25  # the last calls were certification's
    assert model.denoiser.sigma == 0.5  # and the module's denoiser is tuned back for training
