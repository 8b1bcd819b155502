"""What identifies a model: the arguments its constructors were given, and its weights.

A constructor decorated with :func:`records_arguments` keeps its bound arguments (defaults filled in)
on the object it builds, in the spirit of diffusers' ``register_to_config``. :func:`construction`
collects them over a module tree (diffusers' own ``ConfigMixin`` modules included, through their
public ``config``), so a result file can record everything that built its models and a resume can name
the one argument that differs. Nothing here is kept by hand per class: a new argument is recorded
because it is an argument.

    class MyDenoiser(Denoiser):
        @records_arguments(uncompared=("sigma",))
        def __init__(self, sigma, strength=1.0): ...

    @records_arguments
    def my_classifier(num_classes, in_channels, width=64): ...   # a factory: recorded on its result

Arguments named in ``uncompared`` are recorded for information only. They are those that do not
change what the model computes (an activation-checkpointing switch), that are compared elsewhere (a
denoiser's sigma, which it is retuned to and which the certification settings hold), or that only say
where weights came from (the weights themselves are compared through the fingerprint).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

_RECORD = "_ddsx_construction"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Construction:
    """One constructor call: its name and its arguments as plain values (see :func:`plain_value`)."""

    constructor: str
    arguments: dict[str, Any]
    uncompared: frozenset[str] = frozenset()

    def split(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(compared arguments, uncompared ones)."""
        compared = {k: v for k, v in self.arguments.items() if k not in self.uncompared}
        return compared, {k: v for k, v in self.arguments.items() if k in self.uncompared}


def records_arguments(function: F | None = None, *, uncompared: Iterable[str] = ()) -> Any:
    """Decorate an ``__init__`` or a factory function so the object it makes records its arguments.

    On ``__init__`` the record is made only when that ``__init__`` is the object's own class's (or
    inherited unchanged): a subclass with an ``__init__`` of its own that is not decorated has
    arguments this one does not see, so it records nothing rather than something incomplete. A
    factory's record replaces that of the object it returns (the factory's arguments determine it).
    """

    def decorate(function: F) -> F:
        signature = inspect.signature(function)
        skip = frozenset(uncompared)
        unknown = skip - set(signature.parameters)
        if unknown:
            raise TypeError(
                f"{function.__qualname__} has no argument(s) {sorted(unknown)} to leave uncompared"
            )
        is_init = function.__name__ == "__init__"

        @functools.wraps(function)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            arguments = _bound(signature, args, kwargs)
            result = function(*args, **kwargs)
            if is_init:
                instance = args[0]
                if type(instance).__init__ is wrapped:
                    record = Construction(type(instance).__name__, arguments, skip)
                    object.__setattr__(instance, _RECORD, record)
                return result
            object.__setattr__(result, _RECORD, Construction(function.__name__, arguments, skip))
            return result

        return wrapped  # type: ignore[return-value]

    return decorate(function) if function is not None else decorate


def recorded(module: Any) -> Construction | None:
    """The constructor call that made ``module``: its own record, a diffusers config, or None."""
    record = getattr(module, _RECORD, None)
    if isinstance(record, Construction):
        return record
    if _is_diffusers_config_module(module):
        # diffusers records its constructors' arguments itself; "_"-keys are its bookkeeping
        # (class name, library version, where the folder was read from).
        arguments = {k: plain_value(v) for k, v in module.config.items() if not str(k).startswith("_")}
        return Construction(type(module).__name__, arguments)
    return None


def construction(module: nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """(compared, uncompared) descriptions of every recorded constructor call in ``module``'s tree.

    Each is ``{"constructor": ..., "arguments": {...}, "parts": {<module path>: {"constructor": ...,
    "arguments": {...}}}}``; the root's keys are absent when the root records nothing, ``parts`` lists
    only submodules that record their construction. Module-valued arguments appear as their class
    name; what built them is their own entry in ``parts``.
    """
    compared: dict[str, Any] = {}
    uncompared: dict[str, Any] = {}
    for path, sub in module.named_modules():
        record = recorded(sub)
        if record is None:
            continue
        kept, left = record.split()
        entry = {"constructor": record.constructor, "arguments": kept}
        if not path:
            compared |= entry
            uncompared |= {"arguments": left} if left else {}
        else:
            compared.setdefault("parts", {})[path] = entry
            if left:
                uncompared.setdefault("parts", {})[path] = {"arguments": left}
    return compared, uncompared


# ----- plain values ----------------------------------------------------------------------------------


def plain_value(value: Any) -> Any:
    """A JSON-ready stand-in for an argument, equal exactly when the arguments are equal.

    Tensors and arrays by shape, dtype and a hash of their bytes; modules by class name (their own
    construction is recorded where they sit in the tree); containers element by element (Hydra's
    DictConfig and ListConfig are Mappings and Sequences); anything else by its ``repr`` without
    memory addresses.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if isinstance(value, torch.Tensor):
        return {
            "shape": list(value.shape),
            "dtype": str(value.dtype),
            "fingerprint": tensor_fingerprint(value),
        }
    if isinstance(value, nn.Module):
        return type(value).__name__
    if isinstance(value, torch.dtype | torch.device):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, Sequence | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [plain_value(v) for v in items]
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def tensor_fingerprint(tensor: torch.Tensor) -> str:
    """A short hash of one tensor's dtype, shape and exact bytes (computed on the CPU)."""
    digest = hashlib.blake2b(digest_size=8)
    _update(digest, "", tensor)
    return digest.hexdigest()


def module_fingerprint(module: nn.Module | None) -> str:
    """A short hash of a module's state dict (names, dtypes, shapes and exact bytes).

    Hashed on the CPU so the same weights give the same fingerprint on every device.
    """
    digest = hashlib.blake2b(digest_size=8)
    if module is not None:
        for name, tensor in sorted(module.state_dict().items()):
            _update(digest, name, tensor)
    return digest.hexdigest()


def _update(digest: Any, name: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach()
    digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    flat = tensor.reshape(-1).contiguous().cpu()
    digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")


def _bound(signature: inspect.Signature, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The call's arguments by name, defaults filled in, ``self`` left out, ``**kwargs`` spread out."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    arguments: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if name == "self" and kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
            continue
        if kind is inspect.Parameter.VAR_KEYWORD:
            arguments |= {key: plain_value(v) for key, v in value.items()}
        else:
            arguments[name] = plain_value(value)
    return arguments


def _is_diffusers_config_module(module: Any) -> bool:
    # diffusers is imported only if something already did: without it no module can be one of its.
    if "diffusers" not in sys.modules:
        return False
    from diffusers.configuration_utils import ConfigMixin

    return isinstance(module, ConfigMixin) and isinstance(getattr(module, "config", None), Mapping)
