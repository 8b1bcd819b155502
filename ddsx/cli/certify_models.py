"""Which classifiers and which denoiser a ddsx-certify config names, and the checks between them.

The classifiers: the checkpoints of ``ckpt_path`` (``ddsx.models.checkpoints`` finds and loads
them), else ``cfg.classifier`` as configured. The denoiser: the configured one, else the one the
checkpoint was trained through. Models certified in one run must agree on dataset, sigma and
denoiser; a suspicious but allowed combination (another dataset, another sigma) is warned about.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from ddsx.certification.build import ClassifierSpec
from ddsx.certification.settings import InvalidSettingError
from ddsx.cli.wiring import given_on_command_line, hydra_choice
from ddsx.models.checkpoints import checkpoint_name, checkpoint_paths, load_classifier
from ddsx.utils.logging import get_logger

log = get_logger(__name__)


class ModelMismatchError(InvalidSettingError):
    """Classifiers that cannot be certified together, or a classifier= that contradicts a checkpoint."""


def load_from_config(cfg: DictConfig, num_classes: int, in_channels: int) -> list[ClassifierSpec]:
    """Every classifier ``cfg`` names: the checkpoints of ``ckpt_path``, else ``cfg.classifier`` as is."""
    paths = checkpoint_paths(cfg.get("ckpt_path"))
    choice = hydra_choice("classifier")
    if not paths:
        log.warning(
            "no ckpt_path: certifying cfg.classifier (%s) as configured", cfg.classifier.get("_target_")
        )
        classifier = hydra.utils.instantiate(cfg.classifier, num_classes=num_classes, in_channels=in_channels)
        target = str(cfg.classifier.get("_target_"))
        return [ClassifierSpec(classifier.eval(), target, {}, choice or "classifier", {"classifier": choice})]
    specs = []
    for path in paths:
        classifier, run_config = load_classifier(path)
        check_classifier_choice(cfg, path, run_config)
        specs.append(
            ClassifierSpec(
                classifier, str(path.resolve()), run_config, checkpoint_name(path), {"classifier": choice}
            )
        )
    return specs


def check_classifier_choice(cfg: DictConfig, path: Path, run_config: dict[str, Any]) -> None:
    """``classifier=`` given on the command line with a checkpoint of another architecture: refuse."""
    if not given_on_command_line("classifier"):
        return
    trained = run_config.get("classifier")
    trained_target = str(trained.get("_target_", "")) if isinstance(trained, dict) else ""
    configured = str((cfg.get("classifier") or {}).get("_target_", ""))
    if trained_target and configured and trained_target != configured:
        raise ModelMismatchError(
            f"classifier={hydra_choice('classifier')} ({configured}) was given, but the checkpoint {path} "
            f"holds a {trained_target}; drop classifier= (the checkpoint says its architecture)"
        )


def check_compatible(specs: Sequence[ClassifierSpec], sigma_given: bool) -> None:
    """Classifiers certified together must share dataset, sigma (unless certify.sigma is set) and denoiser."""
    if len(specs) < 2:
        return
    first = specs[0]
    keys = ["dataset", "denoiser"] + ([] if sigma_given else ["sigma"])
    for spec in specs[1:]:
        for key in keys:
            a, b = _comparable(first.run_config.get(key)), _comparable(spec.run_config.get(key))
            if a != b:
                raise ModelMismatchError(
                    f"{spec.source} differs from {first.source} in {key} ({b!r} vs {a!r}): classifiers "
                    "certified in one run must share the dataset, sigma and denoiser"
                )


def denoiser_config(cfg: DictConfig, run_config: dict[str, Any]) -> tuple[DictConfig | None, str]:
    """The denoiser to certify through and one sentence saying why.

    With the default ``denoiser=none`` and a checkpoint trained through a denoiser (dds_finetune,
    dds_adv), the checkpoint's own: h alone is not the model that was trained.
    """
    configured = cfg.get("denoiser")
    trained = run_config.get("denoiser")
    configured_target = str((configured or {}).get("_target_", ""))
    trained_target = str(trained.get("_target_", "")) if isinstance(trained, dict) else ""
    trained_real = bool(trained_target) and "Identity" not in trained_target
    if configured_target.endswith("IdentityDenoiser") or not configured_target:
        if trained_real:
            where = trained.get("path", trained_target)
            return OmegaConf.create(trained), (
                f"denoiser: {where}, the one the checkpoint was trained through (denoiser= not given)"
            )
        why = "the checkpoint was trained without one" if run_config else "no checkpoint names one"
        return (
            configured,
            f"denoiser: none, the classifier sees the noisy images ({why}; set denoiser= to add one)",
        )
    where = configured.get("path", configured_target)
    return configured, f"denoiser: {where} (denoiser={hydra_choice('denoiser') or configured_target})"


def warn_on_mismatch(cfg: DictConfig, run_config: dict[str, Any]) -> None:
    """A checkpoint trained with a dataset other than the configured one is allowed but suspicious."""
    trained = run_config.get("dataset")
    trained_target = trained.get("_target_") if isinstance(trained, dict) else None
    current = (cfg.get("dataset") or {}).get("_target_")
    if trained_target and current and trained_target != current:
        log.warning(
            "the checkpoint was trained with dataset=%s but this run uses %s", trained_target, current
        )


def warn_on_other_sigma(sigma: float, run_config: dict[str, Any]) -> None:
    """Certifying at another noise level than the training one is allowed (it is how a model is tested
    off its sigma) but usually a slip: say so. The report's sigma column says it too (train_sigma)."""
    trained = run_config.get("sigma")
    if isinstance(trained, int | float) and not math.isclose(float(trained), sigma):
        log.warning(
            "certifying at sigma %g a model trained at sigma %g (certify.sigma=%g); "
            "leave certify.sigma unset to certify at the training sigma",
            sigma,
            trained,
            sigma,
        )


def _comparable(value: Any) -> Any:
    """A config node without the keys that only say where it was stored."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k not in ("data_dir",)}
    return value
