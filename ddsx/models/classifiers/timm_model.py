"""Any timm architecture by name, with weights only from a local file (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import timm
import torch

from ddsx.models.classifiers.input_adapter import AdaptedClassifier, InputAdapter
from ddsx.models.identity import records_arguments


# checkpoint_path only says where the starting weights are: the weights are compared by fingerprint.
@records_arguments(uncompared=("checkpoint_path",))
def timm_classifier(
    model_name: str,
    num_classes: int = 1000,
    in_channels: int = 3,
    checkpoint_path: str | None = None,
    input_size: int | None = None,
    **model_kwargs,
) -> AdaptedClassifier:
    """A timm model behind the ddsx input adapter.

    ``checkpoint_path`` is a local .safetensors / .pth / .bin state dict (a timm or Hugging Face
    ``pytorch_model.bin`` export). Mean, std and input size come from the model's pretrained config
    unless ``input_size`` is given.
    """
    if checkpoint_path is not None and not Path(checkpoint_path).is_file():
        raise FileNotFoundError(
            f"classifier checkpoint not found: {checkpoint_path}. Put the {model_name} weights there "
            "(a .safetensors or .pth state dict exported from timm / Hugging Face), or set "
            "classifier.checkpoint_path=null to start from random weights."
        )
    network = timm.create_model(
        model_name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **model_kwargs
    )
    if checkpoint_path is not None:
        _load_backbone_weights(network, checkpoint_path, model_name)
    cfg = network.pretrained_cfg
    size = input_size if input_size is not None else cfg.get("input_size", (3, 224, 224))[-1]
    mean, std = cfg.get("mean", (0.5,)), cfg.get("std", (0.5,))
    adapter = InputAdapter(_per_channel(mean, in_channels), _per_channel(std, in_channels), size)
    return AdaptedClassifier(adapter, network)


def _per_channel(values, channels: int) -> tuple[float, ...]:
    """A pretrained config's per-channel statistic for ``channels`` channels: as is when the counts
    agree, else its average on every channel (an RGB model built with in_chans=1 sums its first
    convolution over the colours, so it sees the grey image as the average colour)."""
    values = tuple(float(v) for v in values)
    return values if len(values) == channels else (sum(values) / len(values),) * channels


def _load_backbone_weights(network: torch.nn.Module, path: str, model_name: str) -> None:
    """Load every weight; a classification head of another width (e.g. 21k classes) is left fresh."""
    state = _load_state_dict(path)
    own = network.state_dict()
    head_keys = {k for k in own if k.startswith(network.default_cfg.get("classifier", "head") + ".")}
    for key in head_keys:
        if key in state and state[key].shape != own[key].shape:
            del state[key]  # fine-tuning to a new number of classes
    missing, unexpected = network.load_state_dict(state, strict=False)
    if set(missing) - head_keys or unexpected:
        raise RuntimeError(
            f"{path} does not match timm model {model_name}: missing {sorted(set(missing) - head_keys)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )


def _load_state_dict(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state
