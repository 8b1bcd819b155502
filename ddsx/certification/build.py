"""Assembling a Certifier: the one builder behind ddsx-certify and the Certify callback.

``build_certifier`` takes models already in memory (the callback's, or those ddsx-certify loads
with ``load_from_config``) and returns the engine with one result file and settings sidecar per
classifier. ``tuned_to`` retunes a shared denoiser to the certified sigma for the duration of a
``with`` block.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ddsx.certification.engine import Certifier, Target
from ddsx.certification.memory import check_batch_fits
from ddsx.certification.result_file import run_identity
from ddsx.certification.settings import CertifySettings, InvalidSettingError
from ddsx.denoisers.base import Denoiser, IdentityDenoiser
from ddsx.smoothing.noise import noise_block_size
from ddsx.utils.logging import get_logger
from ddsx.utils.safe_instantiate import allowed_targets, safe_instantiate

log = get_logger(__name__)


class ModelMismatchError(InvalidSettingError):
    """Classifiers that cannot be certified together, or a classifier= that contradicts a checkpoint."""


@dataclass
class ClassifierSpec:
    """A classifier to certify and what to record about it.

    Attributes:
        classifier: the classifier h (denoised [0,1] images -> logits).
        source: where it came from (checkpoint path or config target); informative.
        run_config: the ddsx-train config it was trained with ({} for off-the-shelf).
        name: short name, also used to tell result files apart when there are several.
        info: extra descriptive fields for the sidecar (e.g. the Hydra classifier choice).
    """

    classifier: nn.Module
    source: str
    run_config: dict[str, Any] = field(default_factory=dict)
    name: str = "classifier"
    info: dict[str, Any] = field(default_factory=dict)


def build_certifier(
    settings: CertifySettings,
    classifiers: Sequence[ClassifierSpec],
    *,
    denoiser: nn.Module | None,
    dataset: Any,
    dataset_name: str,
    num_classes: int,
    device: torch.device | str = "cpu",
    split_seed: int | None = None,
) -> Certifier:
    """The engine for ``classifiers`` behind one ``denoiser`` (already tuned to ``settings.sigma``).

    One classifier writes ``settings.output``; several write ``<stem>.<name><suffix>`` beside it,
    each with its own settings sidecar, so each resumes independently. ``split_seed`` (the
    datamodule's) is recorded with the split's fingerprint and compared on resume.
    """
    device = torch.device(device)
    settings = settings.resolved_for(device)  # autocast "auto" -> what runs here, as files record it
    sigma = settings.require_sigma()
    if not settings.output:
        raise InvalidSettingError("certify.output must be a file path, got None")
    if not classifiers:
        raise InvalidSettingError("nothing to certify: no classifier given")
    denoiser_sigma = getattr(denoiser, "sigma", None)
    if isinstance(denoiser, Denoiser) and denoiser_sigma is not None and denoiser_sigma != sigma:
        raise ValueError(f"the denoiser is tuned to sigma={denoiser_sigma}, certify.sigma is {sigma}")
    image, _ = dataset[0]
    block = noise_block_size(tuple(torch.as_tensor(image).shape), device.type)
    copies = settings.forward_passes(len(settings.indices(len(dataset))))  # a batch never holds more
    check_batch_fits(settings.batch_size, copies, torch.as_tensor(image).shape, device)
    outputs = result_paths(Path(settings.output), [spec.name for spec in classifiers])
    targets = []
    for spec, output in zip(classifiers, outputs, strict=True):
        identity = run_identity(
            settings,
            classifier=spec.classifier,
            denoiser=denoiser,
            dataset_name=dataset_name,
            dataset=dataset,
            split_size=len(dataset),
            device_type=device.type,
            noise_block_size=block,
            model_source=spec.source,
            run_info=run_info(spec.run_config, **spec.info),
            split_seed=split_seed,
        )
        targets.append(Target(spec.classifier, output, identity, spec.name))
    if targets:  # shown, never compared on resume: another torch may give other counts for one seed
        log.info(
            "environment: %s",
            ", ".join(f"{k} {v}" for k, v in targets[0].identity["info"]["environment"].items()),
        )
    return Certifier(settings, denoiser, targets, int(num_classes), device)


def result_paths(output: Path, names: Sequence[str]) -> list[Path]:
    """``certify.tsv`` for one classifier; ``certify.<name>.tsv`` for each of several (names made unique)."""
    if len(names) == 1:
        return [output]
    paths, used = [], set()
    for i, name in enumerate(names):
        label = "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or f"classifier{i}"
        if label in used:
            label = f"{label}_{i}"
        used.add(label)
        paths.append(output.with_name(f"{output.stem}.{label}{output.suffix}"))
    return paths


@contextlib.contextmanager
def tuned_to(denoiser: nn.Module | None, sigma: float) -> Iterator[nn.Module | None]:
    """Retune a shared denoiser (t* follows sigma) for the block; its previous sigma comes back after."""
    if not isinstance(denoiser, Denoiser) or denoiser.sigma == sigma:
        yield denoiser
        return
    previous = denoiser.sigma
    denoiser.set_sigma(sigma)
    try:
        yield denoiser
    finally:
        denoiser.set_sigma(previous)


def build_denoiser(denoiser_cfg: DictConfig | None, sigma: float) -> nn.Module:
    """The configured denoiser tuned to ``sigma`` (t* follows it), frozen; None -> identity."""
    if denoiser_cfg is None or "_target_" not in denoiser_cfg:
        denoiser: nn.Module = IdentityDenoiser(sigma)
    else:
        # The config may be a checkpoint's stored one: only ddsx's denoiser constructors are built.
        plain = (
            OmegaConf.to_container(denoiser_cfg, resolve=True)
            if isinstance(denoiser_cfg, DictConfig)
            else dict(denoiser_cfg)
        )
        extra = {"sigma": sigma} if "sigma" in plain else {}
        denoiser = safe_instantiate(
            plain, allowed_targets("denoiser"), "the denoiser config", "denoiser", **extra
        )
    if isinstance(denoiser, Denoiser):
        if denoiser.sigma != sigma:
            denoiser.set_sigma(sigma)
        denoiser.freeze()
    return denoiser.eval()


# ----- ddsx-certify: models from a config --------------------------------------------------------


def checkpoint_paths(ckpt_path: Any) -> list[Path]:
    """``ckpt_path``: one file, a list of files, or a sweep folder (every ``last.ckpt`` below it)."""
    if ckpt_path is None:
        return []
    values = (
        list(ckpt_path)
        if isinstance(ckpt_path, (list, tuple)) or OmegaConf.is_list(ckpt_path)
        else [ckpt_path]
    )
    paths: list[Path] = []
    for value in values:
        path = Path(str(value))
        if path.is_dir():
            found = sorted(path.rglob("last.ckpt"))
            if not found:
                raise FileNotFoundError(f"no last.ckpt below the folder {path} (ckpt_path)")
            paths.extend(found)
        elif not path.is_file():
            raise FileNotFoundError(f"no checkpoint file {path} (ckpt_path)")
        else:
            paths.append(path)
    return paths


def checkpoint_name(path: Path) -> str:
    """A short name for a checkpoint: its run folder (``<run>/checkpoints/last.ckpt`` -> ``<run>``)."""
    parent = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return parent.name if path.stem in ("last", "best") or path.stem.startswith("epoch") else path.stem


def load_from_config(cfg: DictConfig, num_classes: int, in_channels: int) -> list[ClassifierSpec]:
    """Every classifier ``cfg`` names: the checkpoints of ``ckpt_path``, else ``cfg.classifier`` as is."""
    paths = checkpoint_paths(cfg.get("ckpt_path"))
    choice = _hydra_choice("classifier")
    if not paths:
        log.warning(
            "no ckpt_path: certifying cfg.classifier (%s) as configured", cfg.classifier.get("_target_")
        )
        classifier = hydra.utils.instantiate(cfg.classifier, num_classes=num_classes, in_channels=in_channels)
        target = str(cfg.classifier.get("_target_"))
        return [ClassifierSpec(classifier.eval(), target, {}, choice or "classifier", {"classifier": choice})]
    from ddsx.models.checkpoints import load_classifier

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
    if not _classifier_overridden():
        return
    trained = run_config.get("classifier")
    trained_target = str(trained.get("_target_", "")) if isinstance(trained, dict) else ""
    configured = str((cfg.get("classifier") or {}).get("_target_", ""))
    if trained_target and configured and trained_target != configured:
        raise ModelMismatchError(
            f"classifier={_hydra_choice('classifier')} ({configured}) was given, but the checkpoint {path} "
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
    return configured, f"denoiser: {where} (denoiser={_hydra_choice('denoiser') or configured_target})"


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


# ----- descriptive fields --------------------------------------------------------------------------


def method_name(run_config: dict[str, Any] | None) -> str:
    """Short method name of a ddsx-train run config: ``method.name``, else the class name without
    "Module" (``GaussianModule`` -> ``gaussian``); "off-the-shelf" without a training run."""
    if not run_config:
        return "off-the-shelf"
    method = run_config.get("method")
    if isinstance(method, dict):
        if method.get("name"):
            return str(method["name"])
        target = str(method.get("_target_", "")).rsplit(".", 1)[-1]
        return target.removesuffix("Module").lower() or "?"
    return str(method) if method else "?"


def run_info(run_config: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """Descriptive fields for the sidecar (report labels: method, classifier); never compared on resume.

    ``extra`` (e.g. ``classifier="lenet"`` from the Hydra choice) fills in what the run config lacks.
    """
    info: dict[str, Any] = {"method": method_name(run_config)}
    if run_config:
        info |= {k: run_config.get(k) for k in ("sigma", "seed", "task_name") if k in run_config}
        info["train_sigma"] = info.pop("sigma", None)
        classifier = run_config.get("classifier")
        if isinstance(classifier, dict) and classifier.get("_target_"):
            info["classifier"] = str(classifier["_target_"]).rsplit(".", 1)[-1]
    return {k: v for k, v in extra.items() if v is not None} | info


def _comparable(value: Any) -> Any:
    """A config node without the keys that only say where it was stored."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k not in ("data_dir",)}
    return value


def _hydra_choice(group: str) -> str | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get(group)


def _classifier_overridden() -> bool:
    """Whether ``classifier=...`` was given on the command line (its default is only a placeholder)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    overrides = HydraConfig.get().overrides.task
    return any(o.split("=", 1)[0].lstrip("+~") == "classifier" for o in overrides)
