"""Any timm architecture by name, with weights only from a local file (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from timm.models import get_pretrained_cfg_value, load_state_dict

from ddsx.errors import ModelFileError
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
    if checkpoint_path is not None and not Path(checkpoint_path).is_file():  # timm's message names no path
        raise FileNotFoundError(
            f"classifier checkpoint not found: {checkpoint_path}. Put the {model_name} weights there "
            "(a .safetensors or .pth state dict exported from timm / Hugging Face), or set "
            "classifier.checkpoint_path=null to start from random weights."
        )
    try:
        pretrained = _pretrained_from_file(model_name, checkpoint_path)
        network = timm.create_model(
            model_name, num_classes=num_classes, in_chans=in_channels, **pretrained, **model_kwargs
        )
        if checkpoint_path is not None:
            _check_every_weight_was_used(network, pretrained["pretrained_cfg_overlay"].pop("state_dict"))
    except RuntimeError as error:  # the file fails the safe load, or holds another architecture
        if checkpoint_path is None:
            raise
        raise ModelFileError(
            f"{checkpoint_path} cannot be loaded into timm model {model_name}: {str(error).splitlines()[0]}"
        ) from error
    network.pretrained_cfg.pop("state_dict", None)  # timm keeps the overlay: the loaded tensors, twice
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


def _pretrained_from_file(model_name: str, path: str | None) -> dict[str, Any]:
    """timm's own pretrained loading, pointed at a local file instead of a download.

    timm reads the file (safetensors, or ``torch.load(weights_only=True)``: no pickled code runs),
    adapts the first convolution to ``in_chans`` and keeps the classification head only when its
    width is the model's ``num_classes``; a head of another width (ImageNet's 1000 classes when
    fine-tuning to 10) is left fresh. The head's width comes from the file, so a file exported from
    this very model (same classes) keeps its head.
    """
    if path is None:
        return {"pretrained": False}
    state = load_state_dict(path)
    weight = state.get(f"{_heads(model_name)[0]}.weight")
    overlay = {"state_dict": state, "num_classes": int(weight.shape[0]) if weight is not None else -1}
    return {"pretrained": True, "pretrained_cfg_overlay": overlay}


def _heads(model_name: str) -> tuple[str, ...]:
    """The classification head's module name(s), as timm's pretrained config gives them."""
    head = get_pretrained_cfg_value(model_name, "classifier") or "head"
    return (head,) if isinstance(head, str) else tuple(head)


def _check_every_weight_was_used(network, state: dict[str, Any]) -> None:
    """RuntimeError unless the file's keys are the network's, the head aside: timm loads loosely
    (``strict=False``) when it drops a head of another width, so a file of another architecture
    would otherwise leave the network silently at random weights."""
    heads = tuple(f"{name}." for name in _heads(network.pretrained_cfg["architecture"]))
    own = {key for key in network.state_dict() if not key.startswith(heads)}
    given = {key for key in state if not key.startswith(heads)}
    if own != given:
        raise RuntimeError(f"missing {sorted(own - given)[:5]}, unexpected {sorted(given - own)[:5]}")
