"""Assembling a Certifier: the one builder behind ddsx-certify and the Certify callback.

``build_certifier`` takes models already in memory (the callback's, or those ddsx-certify loads
with ``ddsx.cli.certify_models.load_from_config``) and returns the engine with one result file and
settings sidecar per classifier. ``build_denoiser`` builds a configured denoiser tuned to a sigma. ``tuned_to`` retunes a shared denoiser to the certified sigma for the duration of a
``with`` block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ddsx.certification.engine import Certifier, Target
from ddsx.certification.memory import check_batch_fits
from ddsx.certification.result_file import run_identity
from ddsx.certification.run_info import run_info
from ddsx.certification.settings import CertifySettings, InvalidSettingError
from ddsx.denoisers.base import Denoiser, IdentityDenoiser
from ddsx.smoothing.noise import noise_block_size
from ddsx.utils.logging import get_logger
from ddsx.utils.safe_instantiate import allowed_targets, safe_instantiate

log = get_logger(__name__)


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
    settings.require_output()
    if not classifiers:
        raise InvalidSettingError("nothing to certify: no classifier given")
    denoiser_sigma = getattr(denoiser, "sigma", None)
    if isinstance(denoiser, Denoiser) and denoiser_sigma is not None and denoiser_sigma != sigma:
        raise ValueError(f"the denoiser is tuned to sigma={denoiser_sigma}, certify.sigma is {sigma}")
    image, _ = dataset[0]
    block = noise_block_size(tuple(torch.as_tensor(image).shape), device.type)
    copies = settings.forward_passes(len(settings.indices(len(dataset))))  # a batch never holds more
    # A voting denoiser returns `votes` denoised images per noisy copy.
    votes = getattr(denoiser, "votes", 1)
    check_batch_fits(settings.batch_size, copies, torch.as_tensor(image).shape, device, votes)
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
