"""ddsx's experiment loggers: W&B found by type, the config flattened, runs finished, no library patched."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.loggers import WandbLogger

from ddsx.certification import ResultRow
from ddsx.loggers import close_loggers
from ddsx.loggers.certification import log_certification
from ddsx.loggers.wandb import DdsxWandbLogger, wandb_logger

wandb = pytest.importorskip("wandb")


class Recorder:
    """Stands in for a W&B run: what was logged, saved and put in the run's config."""

    def __init__(self) -> None:
        self.logged, self.saved, self.config = {}, [], self

    def log(self, payload) -> None:
        self.logged |= payload

    def save(self, path=None, base_path=None, policy=None) -> None:
        self.saved.append(path)

    def update(self, params, allow_val_change=False) -> None:
        self.logged |= params


class RecordingWandbLogger(DdsxWandbLogger):
    """A real (ddsx) WandbLogger whose run is a Recorder, so no W&B run is made."""

    def __init__(self, save_dir: Path) -> None:
        super().__init__(offline=True, save_dir=str(save_dir))
        self.recorder = Recorder()

    @property
    def experiment(self):
        return self.recorder


ROWS = [ResultRow(0, 1, 1, 0.8, 1, "0:00:01"), ResultRow(1, 2, -1, 0.0, 0, "0:00:01")]


def test_a_wandb_logger_gets_cert_metrics_a_table_a_plot_and_the_file(tmp_path: Path) -> None:
    logger = RecordingWandbLogger(tmp_path)
    metrics = log_certification([logger], ROWS, [0.0, 0.5, 1.0], tmp_path / "certify.tsv")
    assert metrics["cert/acc@0.5"] == 0.5 and metrics["cert/acc@1"] == 0.0
    assert metrics["cert/acr"] == pytest.approx(0.4) and metrics["cert/abstain"] == 0.5
    assert metrics.items() <= logger.recorder.logged.items()
    assert isinstance(logger.recorder.logged["cert/rows"], wandb.Table)
    assert isinstance(logger.recorder.logged["cert/plot"], wandb.Image)
    assert logger.recorder.saved == [str(tmp_path / "certify.tsv")]


class WandbLoggerLookalike:
    """Not a W&B logger, whatever its class is called."""

    def __init__(self) -> None:
        self.metrics, self.experiment = {}, Recorder()

    def log_metrics(self, metrics, step=0) -> None:
        self.metrics |= metrics


def test_a_logger_is_taken_for_wandb_by_its_type_not_its_class_name(tmp_path: Path) -> None:
    lookalike = type("WandbLogger", (WandbLoggerLookalike,), {})()
    metrics = log_certification([lookalike], ROWS, [0.0, 0.5], tmp_path / "certify.tsv")
    assert lookalike.metrics == metrics
    assert lookalike.experiment.logged == {} and lookalike.experiment.saved == []


def test_hyperparameters_reach_wandb_under_dotted_keys(tmp_path: Path) -> None:
    logger = RecordingWandbLogger(tmp_path)
    logger.log_hyperparams({"attack": {"steps": 2, "step_size": 0.5}, "sigma": 0.25, "radii": [0, 1]})
    assert logger.recorder.logged == {
        "attack.steps": 2,
        "attack.step_size": 0.5,
        "sigma": 0.25,
        "radii": [0, 1],
    }


def test_the_config_built_logger_is_ddsx_s_and_patches_nothing_in_wandb(tmp_path: Path) -> None:
    termwarn = wandb.termwarn
    logger = wandb_logger(project="p", save_dir=str(tmp_path), offline=True)
    assert isinstance(logger, DdsxWandbLogger) and isinstance(logger, WandbLogger)
    assert wandb.termwarn is termwarn and termwarn.__module__ == "wandb.errors.term"
    assert type(logger).log_hyperparams is DdsxWandbLogger.log_hyperparams  # a method, not an instance patch
    assert "log_hyperparams" not in vars(logger)


@pytest.mark.parametrize(("failed", "exit_code"), [(False, 0), (True, 1)])
def test_closing_a_wandb_logger_finishes_the_open_run(tmp_path: Path, monkeypatch, failed, exit_code) -> None:
    finished = []
    monkeypatch.setattr(wandb, "run", object())
    monkeypatch.setattr(wandb, "finish", lambda exit_code: finished.append(exit_code))
    close_loggers([WandbLoggerLookalike()], failed=failed)
    assert finished == []  # not a W&B logger: its run is none of closing's business
    close_loggers([RecordingWandbLogger(tmp_path)], failed=failed)
    assert finished == [exit_code]
    monkeypatch.setattr(wandb, "run", None)
    close_loggers([RecordingWandbLogger(tmp_path)], failed=failed)
    assert finished == [exit_code]  # no open run: nothing to finish
