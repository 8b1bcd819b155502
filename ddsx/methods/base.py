"""What every training method shares: the classifier, the frozen denoiser, validation, optimisers.

A method is a subclass that only says how a training batch becomes the classifier's loss
(``training_loss``; most methods only override ``training_inputs``). Validation reports accuracy on
clean, noisy and denoised-noisy inputs so the covariate shift of section 2 is visible in the curves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ddsx.denoisers.base import Denoiser, IdentityDenoiser
from ddsx.models.pipeline import DenoisedClassifier
from ddsx.utils.logging import get_logger
from ddsx.utils.rng_state import gather_rng_states, restore_rng_state
from ddsx.utils.safe_instantiate import check_stored_models

log = get_logger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]

EVAL_VIEWS = ("clean", "noisy", "denoised")

# float16 autocast without loss scaling: an attack's gradient with respect to its input underflows
# to zero silently (Lightning's GradScaler only scales the outer loss), so the attack would vanish.
UNSAFE_ATTACK_PRECISIONS = ("16-mixed", "16", "16-true", "half")


class ClassifierModule(L.LightningModule):
    """Trainable classifier h behind a frozen denoiser D; the certified function is h o D.

    Args:
        classifier: [0,1] images (N, C, H, W) -> logits (N, K).
        num_classes: K.
        sigma: smoothing noise level in [0,1] pixel units.
        optimizer: partial taking ``params`` (Hydra ``_partial_: true``).
        scheduler: optional partial taking ``optimizer``; stepped per epoch.
        denoiser: frozen noisy->denoised map; ``None`` means identity.
        name: the method's short name (``method.name``: gaussian, smoothadv, dds, dds_finetune,
            dds_adv, standard) for logs, W&B and reports; defaults to the class name.
    """

    # False for methods that only evaluate an off-the-shelf classifier (ddsx-train skips fit).
    trainable = True
    # True for methods whose training step differentiates the loss with respect to the input (attacks).
    uses_input_gradients = False

    def __init__(
        self,
        classifier: nn.Module,
        num_classes: int,
        sigma: float,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        denoiser: Denoiser | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.classifier = classifier
        self.denoiser = (denoiser if denoiser is not None else IdentityDenoiser(sigma)).freeze()
        self.num_classes = num_classes
        self.sigma = float(sigma)
        self.method_name = name or type(self).__name__.removesuffix("Module").lower()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        # The resolved run config; ddsx-train sets it so checkpoints are self-describing.
        self.run_config: dict[str, Any] = {}
        # True once on_load_checkpoint has put back the generators of an interrupted fit.
        self._rng_restored = False
        self.val_acc = nn.ModuleDict(
            {v: MulticlassAccuracy(num_classes, average="micro") for v in EVAL_VIEWS}
        )
        self.test_acc = nn.ModuleDict(
            {v: MulticlassAccuracy(num_classes, average="micro") for v in EVAL_VIEWS}
        )

    # ----- what a method changes -------------------------------------------------------------
    def training_inputs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The images the classifier trains on for a clean batch x (N, C, H, W) with labels y (N,)."""
        raise NotImplementedError

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits) for one batch; the default trains with cross-entropy on ``training_inputs``."""
        logits = self.classifier(self.training_inputs(x, y))
        return F.cross_entropy(logits, y), logits

    # ----- shared helpers --------------------------------------------------------------------
    def add_noise(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """x + sigma * eps with eps ~ N(0, I) unless given; no clipping (smoothing does not clip)."""
        return x + self.sigma * (torch.randn_like(x) if eps is None else eps)

    def denoise(self, x_noisy: torch.Tensor) -> torch.Tensor:
        return self.denoiser(x_noisy)

    def base_classifier(self) -> DenoisedClassifier:
        """The function that randomized smoothing certifies: h o D."""
        return DenoisedClassifier(self.classifier, self.denoiser)

    # ----- Lightning hooks -------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss, logits = self.training_loss(x, y)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(y))
        self.log(
            "train/acc",
            (logits.argmax(1) == y).float().mean(),
            on_epoch=True,
            on_step=False,
            batch_size=len(y),
        )
        return loss

    def _evaluate(self, batch, metrics: nn.ModuleDict, stage: str) -> None:
        x, y = batch
        x_noisy = self.add_noise(x)
        views = {"clean": x, "noisy": x_noisy, "denoised": self.denoise(x_noisy)}
        for name, images in views.items():
            metrics[name](self.classifier(images), y)
            self.log(f"{stage}/acc_{name}", metrics[name], prog_bar=name != "clean", batch_size=len(y))

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_acc, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_acc, "test")

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.uses_input_gradients:
            check_attack_precision(str(self.trainer.precision), self.method_name)

    def on_train_start(self) -> None:
        # seed_everything gives every DDP process the same seed, so each would draw the same noise
        # for its shard of the global batch; offset the stream by rank to keep the draws independent.
        # A resumed run already continues each process's own stream (on_load_checkpoint).
        if self.trainer.world_size > 1 and not self._rng_restored:
            torch.manual_seed(torch.initial_seed() + self.global_rank)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.classifier.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer)},
        }

    def attached_trainer(self) -> Any:
        """The trainer, or None for a module used outside one (Lightning's public ``trainer`` property
        raises then; reading its private ``_trainer`` instead would break silently on an upgrade)."""
        try:
            return self.trainer
        except RuntimeError:
            return None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The frozen denoiser can be hundreds of MB and is reloaded from its own folder: keep it out.
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("denoiser.")]:
            del state[key]
        checkpoint["ddsx_config"] = self.run_config
        # Every process's generator state (indexed by rank), so a resume continues the noise stream.
        trainer = self.attached_trainer()
        world_size = trainer.world_size if trainer is not None else 1
        checkpoint["ddsx_rng_states"] = gather_rng_states(world_size)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get("ddsx_config") or {}
        # A checkpoint whose stored models would be refused by ddsx-certify / init_classifier= is hostile
        # (or not ddsx's): refuse to resume from it rather than carry its config forward.
        trainer = self.attached_trainer()
        source = getattr(trainer, "ckpt_path", None) or "the checkpoint being loaded"
        check_stored_models(stored, str(source))
        checkpoint["state_dict"].update({f"denoiser.{k}": v for k, v in self.denoiser.state_dict().items()})
        # The run's own config wins: a resumed or fine-tuned run saves the settings it runs with. Only a
        # module built outside ddsx-train (no config of its own) adopts the stored one.
        if not self.run_config:
            self.run_config = stored
        if trainer is None or trainer.state.fn != "fit":
            return
        states = checkpoint.get("ddsx_rng_states") or []
        if len(states) == trainer.world_size:
            # Now, before the training data loader draws its seeds: Lightning puts the generators back
            # after its sanity check, so the draws then follow those of an uninterrupted run.
            restore_rng_state(states[trainer.global_rank])
            self._rng_restored = True
        else:
            log.warning(
                "the checkpoint holds the random state of %d process(es), this run has %d: "
                "the training noise stream restarts from the seed instead of continuing",
                len(states),
                trainer.world_size,
            )
        for logger in trainer.loggers:
            if hasattr(logger, "forget_after"):
                logger.forget_after(int(checkpoint.get("epoch", 0)), int(checkpoint.get("global_step", 0)))


def check_attack_precision(precision: str, method: str) -> None:
    """ValueError for a trainer precision under which an attack's input gradient silently underflows."""
    if precision in UNSAFE_ATTACK_PRECISIONS:
        raise ValueError(
            f"method {method} attacks its input with torch.autograd.grad, which float16 without loss "
            f"scaling underflows to zero: trainer.precision={precision} is refused. Use "
            "trainer.precision=bf16-mixed (same speed on recent GPUs, float32's range) or 32-true."
        )
