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


def test_wandb_gets_no_accuracy_past_the_sampling_limit_and_shows_the_report_s_dash(tmp_path: Path) -> None:
    # Issue 22 item 14: W&B held 0.0 where ddsx-report's table shows "-" (a radius n and alpha cannot
    # certify). At sigma 0.5, n = 1000, alpha = 0.001 that radius is 0.5 * PhiInv(0.001 ** (1 / 1000)) = 1.2316.
    from ddsx.certification.row_validation import largest_certifiable_radius
    from ddsx.report.runs import Run
    from ddsx.report.tables import summary_table, wandb_table
    from ddsx.report.wandb_offline import WandbRun

    rows = [ResultRow(0, 1, 1, 1.1, 1, "0:00:01", n=1000, sigma=0.5), ResultRow(1, 2, 2, 0.3, 0, "0:00:01")]
    radii = [0.0, 1.0, 1.5]
    logger = RecordingWandbLogger(tmp_path)
    ceiling = largest_certifiable_radius(0.5, 1000, 0.001)
    metrics = log_certification([logger], rows, radii, tmp_path / "certify.tsv", max_radius=ceiling)
    assert metrics["cert/acc@1"] == 0.5 and "cert/acc@1.5" not in metrics
    assert "cert/acc@1.5" not in logger.recorder.logged
    # The W&B run as ddsx-report reads it back, beside the report's own row of the same file.
    w_header, [w_row] = wandb_table([WandbRun(tmp_path, summary=dict(logger.recorder.logged))], radii)
    r_header, [r_row] = summary_table([Run(Path("certify.tsv"), rows, sigma=0.5, n=1000, alpha=0.001)], radii)
    cells = [(w_row[w_header.index(f"r={r:g}")], r_row[r_header.index(f"r={r:g}")]) for r in radii]
    assert cells == [("50.0", "50.0"), ("50.0", "50.0"), ("-", "-")]
