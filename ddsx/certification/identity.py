"""What produced a result file: the settings and the exact model, stored beside it as JSON.

A result file may only be extended by a run that would have produced the same rows, so the
sidecar records everything a row depends on (compared on resume) and, separately, descriptive
information for reports (never compared).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

import ddsx
from ddsx.certification.settings import CertifySettings

FORMAT = "ddsx-certify/1"
# The settings a row depends on (batch_size, skip, max, output only decide which rows get made).
ROW_SETTINGS = ("sigma", "n0", "n", "alpha", "seed", "split", "autocast_dtype")


def module_fingerprint(module: nn.Module | None) -> str:
    """A short hash of a module's state dict (names, dtypes, shapes and exact bytes).

    Hashed on the CPU so the same weights give the same fingerprint on every device.
    """
    digest = hashlib.blake2b(digest_size=8)
    if module is not None:
        for name, tensor in sorted(module.state_dict().items()):
            tensor = tensor.detach()
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            flat = tensor.reshape(-1).contiguous().cpu()
            digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def run_identity(
    settings: CertifySettings,
    *,
    classifier: nn.Module,
    denoiser: nn.Module | None,
    dataset: str,
    split_size: int,
    model_source: str,
    run_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The sidecar document for a run.

    Args:
        settings: with sigma resolved.
        classifier: the classifier h (fingerprinted).
        denoiser: the denoiser D, or None; its ``describe()`` (t*, achieved sigma) is recorded.
        dataset: dataset name (the split is in settings).
        split_size: examples in the split (a different split with the same name shows up here).
        model_source: where the classifier came from (checkpoint path or config target); informative.
        run_info: descriptive fields for report labels (method, training sigma, ...); never compared.
    """
    settings.require_sigma()
    described = dict(denoiser.describe()) if denoiser is not None and hasattr(denoiser, "describe") else {}
    row_settings = {key: settings.as_dict()[key] for key in ROW_SETTINGS}
    return _jsonable(
        {
            "format": FORMAT,
            "settings": row_settings | {"dataset": dataset, "split_size": int(split_size)},
            "model": {"name": type(classifier).__name__, "fingerprint": module_fingerprint(classifier)},
            "denoiser": {
                "name": str(described.get("name", "none" if denoiser is None else type(denoiser).__name__)),
                "fingerprint": module_fingerprint(denoiser),
                "t_star": described.get("t_star"),
            },
            "info": {
                "model_source": model_source,
                "denoiser": described,
                "run": run_info or {},
                "batch_size": settings.batch_size,
                "skip": settings.skip,
                "max": settings.max_examples,
                "radii": list(settings.radii),
                "ddsx_version": ddsx.__version__,
                "created": datetime.datetime.now().isoformat(timespec="seconds"),
            },
        }
    )


def compared_fields(identity: dict[str, Any]) -> dict[str, Any]:
    """Flattened fields that must match to append: ``certify.sigma``, ``model.fingerprint``, ..."""
    fields = {f"certify.{k}": v for k, v in identity.get("settings", {}).items()}
    for part in ("model", "denoiser"):
        fields |= {f"{part}.{k}": v for k, v in identity.get(part, {}).items()}
    return fields


def identity_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences between two sidecars, one per differing field (empty: same run)."""
    old, new = compared_fields(stored), compared_fields(current)
    return [
        f"{key}: the file was made with {old.get(key)!r}, this run has {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def write_identity(path: Path, identity: dict[str, Any]) -> None:
    """Write atomically, so a crash never leaves a half sidecar."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(identity, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_identity(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete it with its result file") from error


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so the stored and compared documents are the same plain values."""
    return json.loads(json.dumps(value, default=str))
