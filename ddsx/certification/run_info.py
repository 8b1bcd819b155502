"""Descriptive fields a result file's sidecar records about the run that trained a classifier (the
report's labels: method, classifier, training sigma); never compared on resume."""

from __future__ import annotations

from typing import Any


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
