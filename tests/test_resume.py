"""Resuming ddsx-train: the run's current config is kept, the noise stream continues, earlier metrics
stay, and the same command again in the same run folder continues that run."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from ddsx.cli.train import build_training, fit_and_test
from tests.conftest import compose_config

SHORT = ("dataset=digits", "debug=limit", "logger=csv", "test=false", "method=gaussian", "sigma=0.5")


def run(tmp_path: Path, folder: str, *overrides: str, ckpt: Path | None = None):
    """Fit the short recipe in ``tmp_path/folder`` (ckpt: resume from it); returns (model, trainer)."""
    cfg = compose_config("ddsx_train", [f"paths.root_dir={tmp_path}", *SHORT, *overrides], tmp_path / folder)
    datamodule, model, trainer = build_training(cfg)
    trainer.fit(model, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None)
    return model, trainer


def last_ckpt(tmp_path: Path, folder: str) -> Path:
    return tmp_path / folder / "checkpoints" / "last.ckpt"


def metric_rows(tmp_path: Path, folder: str) -> list[dict[str, str]]:
    with open(tmp_path / folder / "csv" / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_resume_continues_the_noise_stream(tmp_path: Path) -> None:
    straight, _ = run(tmp_path, "straight", "trainer.max_epochs=2")
    run(tmp_path, "split", "trainer.max_epochs=1")
    resumed, _ = run(tmp_path, "split", "trainer.max_epochs=2", ckpt=last_ckpt(tmp_path, "split"))
    # Same data order and same noise as an uninterrupted run: the same weights. A restarted stream
    # (seed_everything again) would train epoch 2 on epoch 1's noise draws.
    for (name, a), b in zip(
        straight.classifier.state_dict().items(), resumed.classifier.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def test_resume_saves_the_current_config_not_the_checkpoints(tmp_path: Path) -> None:
    run(tmp_path, "run", "trainer.max_epochs=1", "optimizer.lr=0.01")
    run(tmp_path, "run", "trainer.max_epochs=2", "optimizer.lr=0.002", ckpt=last_ckpt(tmp_path, "run"))
    stored = torch.load(last_ckpt(tmp_path, "run"), weights_only=True)["ddsx_config"]
    assert stored["trainer"]["max_epochs"] == 2 and stored["optimizer"]["lr"] == 0.002


def test_resume_keeps_the_metrics_of_earlier_epochs(tmp_path: Path) -> None:
    run(tmp_path, "run", "trainer.max_epochs=1")
    first = metric_rows(tmp_path, "run")
    run(tmp_path, "run", "trainer.max_epochs=2", ckpt=last_ckpt(tmp_path, "run"))
    rows = metric_rows(tmp_path, "run")
    assert {r["epoch"] for r in rows if r["epoch"]} == {"0", "1"}
    filled = [{k: v for k, v in r.items() if v} for r in rows]
    assert filled[: len(first)] == [{k: v for k, v in r.items() if v} for r in first]
    assert len(rows) > len(first)


def test_resume_drops_the_rows_of_the_epoch_it_redoes(tmp_path: Path) -> None:
    run(tmp_path, "run", "trainer.max_epochs=1")
    path = tmp_path / "run" / "csv" / "metrics.csv"
    rows = metric_rows(tmp_path, "run")
    # What a kill during epoch 1 leaves: rows of an epoch the checkpoint does not hold.
    with open(path, "a", newline="") as file:
        csv.DictWriter(file, fieldnames=list(rows[0])).writerow(rows[0] | {"epoch": "1", "step": "999"})
    run(tmp_path, "run", "trainer.max_epochs=2", ckpt=last_ckpt(tmp_path, "run"))
    assert "999" not in {r["step"] for r in metric_rows(tmp_path, "run")}


def test_same_command_again_continues_the_run_in_its_folder(tmp_path: Path) -> None:
    def same_command(*overrides: str):
        cfg = compose_config(
            "ddsx_train", [f"paths.root_dir={tmp_path}", *SHORT, *overrides], tmp_path / "run"
        )
        datamodule, model, trainer = build_training(cfg)
        fit_and_test(cfg, datamodule, model, trainer)
        return trainer

    steps_per_epoch = same_command("trainer.max_epochs=1").global_step
    ckpt = last_ckpt(tmp_path, "run")
    written = ckpt.stat().st_mtime_ns
    # Finished: the same command again trains nothing and leaves the checkpoint alone.
    assert same_command("trainer.max_epochs=1").global_step == steps_per_epoch
    assert ckpt.stat().st_mtime_ns == written
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["epoch000.ckpt", "last.ckpt"]
    # A later max_epochs continues from the checkpoint: epoch 0 is not trained again.
    trainer = same_command("trainer.max_epochs=2")
    assert trainer.current_epoch == 2 and trainer.global_step == 2 * steps_per_epoch
    # No second set of checkpoints (Lightning would write last-v1.ckpt beside a fresh run's last.ckpt).
    assert not [p.name for p in ckpt.parent.iterdir() if "-v" in p.name]


def test_each_process_gets_its_own_generator_state_back() -> None:
    from types import SimpleNamespace

    from ddsx.methods.gaussian import GaussianModule
    from ddsx.models.classifiers import lenet
    from ddsx.utils.rng_state import collect_rng_state

    states, draws = [], []
    for rank_seed in (11, 22):  # what two DDP processes hold when the checkpoint is written
        torch.manual_seed(rank_seed)
        states.append(collect_rng_state())
        draws.append(torch.randn(3))
    module = GaussianModule(lenet(num_classes=10, in_channels=1), num_classes=10, sigma=0.5, optimizer=None)
    module.trainer = SimpleNamespace(world_size=2, global_rank=1, state=SimpleNamespace(fn="fit"), loggers=[])
    torch.manual_seed(0)
    module.on_load_checkpoint({"state_dict": {}, "ddsx_config": {}, "ddsx_rng_states": states})
    torch.testing.assert_close(torch.randn(3), draws[1])


def test_a_module_outside_a_trainer_saves_and_loads_its_checkpoint_state() -> None:
    # Lightning's public `trainer` property raises for a module with no trainer; the module must
    # treat that as one process rather than fail (it reads no private attribute for it).
    from ddsx.methods.gaussian import GaussianModule
    from ddsx.models.classifiers import lenet

    module = GaussianModule(lenet(num_classes=10, in_channels=1), num_classes=10, sigma=0.5, optimizer=None)
    assert module.attached_trainer() is None
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert len(checkpoint["ddsx_rng_states"]) == 1
    module.on_load_checkpoint(checkpoint)
