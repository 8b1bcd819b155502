"""Certify the trained model at the end of ddsx-train and log ``cert/*`` to the trainer's loggers."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ddsx.certification.build import ClassifierSpec, build_certifier, tuned_to
from ddsx.certification.engine import Target
from ddsx.certification.metrics import format_summary, summarize
from ddsx.certification.result_file import check_writable, read_identity, read_results
from ddsx.certification.row_validation import largest_certifiable_radius
from ddsx.certification.settings import CertifySettings
from ddsx.data.base import split_set
from ddsx.loggers.certification import log_certification
from ddsx.models.checkpoints import CLASSIFIER_PREFIX
from ddsx.models.pipeline import DenoisedClassifier
from ddsx.utils.logging import get_logger

log = get_logger(__name__)


class CertifyCallback(Callback):
    """At ``on_fit_end`` (or ``on_test_end`` for a method that trains nothing), CERTIFY a subset of the test split with ``pl_module.base_classifier()``.

    Every process certifies its share of the examples (same rows as one process), rank 0 merges
    the result file and logs ``cert/acc@<r>`` for ``settings.radii``, ``cert/acr``,
    ``cert/abstain``, ``cert/clean_acc`` and ``cert/examples``; with a WandbLogger also a table of
    rows, the plot and the file.

    Args:
        settings: the ``certify`` config node (see CertifySettings); ``sigma`` None means the
            module's ``sigma``; ``output`` must be set.
        weights: "best" certifies the best checkpoint of the ModelCheckpoint callback when there
            is one (what ddsx-train tests), "last" the weights in memory at the end of fit.
        **overrides: individual settings replacing those in ``settings`` (e.g. ``max=100``).
    """

    def __init__(
        self,
        settings: Mapping[str, Any] | None = None,
        weights: Literal["best", "last"] = "best",
        **overrides: Any,
    ) -> None:
        super().__init__()
        if weights not in ("best", "last"):
            raise ValueError(f"weights must be 'best' or 'last', got {weights!r}")
        self.settings = CertifySettings.from_mapping(settings, **overrides)  # validate at construction
        if not self.settings.output:
            raise ValueError("CertifyCallback needs settings.output (the result file path)")
        check_writable(self.settings.output)  # now, not after the training
        self.weights = weights
        self.metrics: dict[str, float] = {}
        self.result_path: Path | None = None  # the file the last certification wrote

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.certify(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Methods that train nothing (method=dds) skip fit: certify after their test instead.
        if not self.metrics and not getattr(pl_module, "trainable", True):
            self.certify(trainer, pl_module)

    def certify(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Certify now, with the trainer's datamodule and devices; logs and stores ``self.metrics``."""
        if trainer.sanity_checking or getattr(trainer, "fast_dev_run", False):
            log.info("certify callback: skipped under fast_dev_run")
            return
        datamodule = trainer.datamodule
        if datamodule is None:
            log.warning("certify callback: no datamodule on the trainer, nothing to certify")
            return
        settings = self.settings.with_sigma(
            self.settings.sigma if self.settings.sigma is not None else float(pl_module.sigma)
        )
        dataset = split_set(datamodule, settings.split)
        base, source = self._base_classifier(trainer, pl_module)
        classifier = getattr(base, "classifier", base)
        denoiser = getattr(base, "denoiser", None)
        device = trainer.strategy.root_device
        home, modes = _device_of(base), {m: m.training for m in base.modules()}
        # After fit Lightning has moved the module to the CPU; certify on the training device.
        base.to(device).eval()
        spec = ClassifierSpec(
            classifier if denoiser is not None else base,
            source,
            dict(getattr(pl_module, "run_config", None) or {}),
            name=type(pl_module).__name__,
        )
        try:
            # certify.sigma may differ from the training sigma: t* follows the certified sigma.
            with tuned_to(denoiser, settings.require_sigma()):
                certifier = build_certifier(
                    settings,
                    [spec],
                    denoiser=denoiser,
                    dataset=dataset,
                    dataset_name=getattr(datamodule, "name", type(datamodule).__name__),
                    num_classes=datamodule.num_classes,
                    device=device,
                    split_seed=getattr(datamodule, "split_seed", None),
                )
                certifier.targets = [_file_for_these_weights(t) for t in certifier.targets]
                strategy = trainer.strategy
                [path] = certifier.run(
                    dataset,
                    rank=trainer.global_rank,
                    world_size=trainer.world_size,
                    barrier=strategy.barrier,
                    broadcast=lambda value: strategy.broadcast(value, src=0),
                )
        finally:
            base.to(home)  # shared with the module (classifier, denoiser): leave it as it was
            for module, mode in modes.items():
                module.training = mode
        self.result_path = path
        if trainer.is_global_zero:
            rows = read_results(path)
            ceiling = largest_certifiable_radius(settings.require_sigma(), settings.n, settings.alpha)
            self.metrics = log_certification(
                trainer.loggers, rows, settings.radii, path, step=trainer.global_step, max_radius=ceiling
            )
            trainer.callback_metrics.update({k: torch.tensor(v) for k, v in self.metrics.items()})
            log.info("%s -> %s", format_summary(summarize(rows, settings.radii), settings.radii), path)

    def _base_classifier(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> tuple[torch.nn.Module, str]:
        """``pl_module.base_classifier()``, with the best checkpoint's classifier weights when asked
        for (loaded into a copy: the module itself is left untouched)."""
        base = pl_module.base_classifier()
        checkpoint = trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_path", "") if checkpoint is not None else ""
        if self.weights == "last" or not best or not Path(best).is_file():
            return base, f"{type(pl_module).__name__} weights at the end of fit"
        if not isinstance(base, DenoisedClassifier):
            log.warning(
                "certify callback: base_classifier() is not a DenoisedClassifier; using the last weights"
            )
            return base, f"{type(pl_module).__name__} weights at the end of fit"
        classifier = copy.deepcopy(base.classifier)
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        n = len(CLASSIFIER_PREFIX)
        classifier.load_state_dict({k[n:]: v for k, v in state.items() if k.startswith(CLASSIFIER_PREFIX)})
        return DenoisedClassifier(classifier, base.denoiser), str(Path(best).resolve())


def _file_for_these_weights(target: Target) -> Target:
    """``target``, or, when its result file holds rows of other weights, the same target writing
    ``<stem>_<first 8 hex of these weights' fingerprint><suffix>`` beside it.

    A continued run (README, "Running the same ddsx-train command again") trains further and ends in
    new weights; its file holds the earlier weights' rows, which a resume rightly refuses to mix with
    others. Each set of weights gets a file of its own instead (the same weights again resume theirs).
    """
    if not target.file.sidecar.is_file():
        return target
    model = read_identity(target.file.sidecar).get("model")
    stored = model.get("fingerprint") if isinstance(model, dict) else None
    current = str(target.identity["model"]["fingerprint"])
    if stored == current:
        return target
    output = target.output.with_name(f"{target.output.stem}_{current[:8]}{target.output.suffix}")
    log.info(
        "certify callback: %s holds rows of other weights (model fingerprint %s); these weights "
        "(fingerprint %s) are certified into %s",
        target.output,
        stored,
        current,
        output,
    )
    return dataclasses.replace(target, output=output)


def _device_of(module: torch.nn.Module) -> torch.device:
    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")
