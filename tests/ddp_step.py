"""Run by test_methods.py: two DDP steps of dds_adv on CPU, then each rank saves its classifier.

Lightning's DDP launcher re-runs this script once per extra process, so it must be a plain script.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ddsx.cli.train import build_training  # noqa: E402
from tests.conftest import compose_config  # noqa: E402


class SaveFirstBatch(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            pl_module.first_batch = batch[0].detach().clone()
            pl_module.first_noise = torch.randn(16)  # what this rank's noise stream gives


def main(out: Path) -> None:
    torch.set_num_threads(1)
    cfg = compose_config(
        "ddsx_train",
        [
            f"paths.root_dir={out}",
            "dataset=digits",
            "dataset.batch_size=16",
            "method=dds_adv",
            "attack=mnist",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "+trainer.max_steps=2",
            "+trainer.limit_val_batches=0",
            "trainer.sync_batchnorm=false",
            "logger=none",
            "callbacks=none",
            "+trainer.enable_checkpointing=false",
        ],
        out / "run",
    )
    datamodule, model, trainer = build_training(cfg)
    trainer.callbacks.append(SaveFirstBatch())
    if trainer.global_rank == 0:
        torch.save({k: v.clone() for k, v in model.classifier.state_dict().items()}, out / "init.pt")
    trainer.fit(model, datamodule=datamodule)
    state = {k: v.detach().cpu() for k, v in model.classifier.state_dict().items()}
    torch.save(
        {"state": state, "first_batch": model.first_batch, "first_noise": model.first_noise},
        out / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
