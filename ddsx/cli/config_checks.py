"""Checks of the command line's overrides against the composed config, before a job does any work.

Two mistakes Hydra lets through:

- an added field (``+certify.nn=10``, as Hydra's own hint for a mistyped ``certify.nn=10`` suggests)
  that nothing reads: the job would run to the end and ignore it. Refused, naming the nearest real
  field. A field is real if its node already has it, or if the node's ``_target_`` takes it as an
  argument (``+trainer.limit_train_batches=5``); new entries of a node of objects (``+callbacks.x=...``)
  and ``++`` (force-add) are the user's own business.
- a value of the wrong type (``trainer.max_epochs=ten``): found otherwise after the model was built,
  as a traceback. Checked against the ``_target_``'s annotation of the argument where it has one,
  else against the type of the value the config had before the override (a number stays a number, a
  bool a bool, a list a list).

Both raise :class:`ConfigFieldError` (one line, exit code 2 through ``ddsx.cli.errors``).
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ddsx.errors import DDSXError

_MISSING = object()


def _certify_settings(node: DictConfig) -> None:
    from ddsx.certification.settings import CertifySettings

    CertifySettings.from_mapping(node)


# Nodes with a schema of their own, which checks every field's type and range in one line.
_SCHEMAS: dict[str, Callable[[DictConfig], None]] = {"certify": _certify_settings}


class ConfigFieldError(DDSXError):
    """A command-line override names a field nothing reads, or gives it a value of the wrong type."""


def check_overrides(cfg: DictConfig) -> None:
    """Refuse unknown added fields and ill-typed values among the running Hydra job's overrides."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    if not HydraConfig.initialized():
        return  # called outside a Hydra app (a test building the job itself)
    hydra_cfg = HydraConfig.get()
    groups = set(hydra_cfg.runtime.choices)
    overrides = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    values = [o for o in overrides if _is_field(o.key_or_group, groups) and o.type == OverrideType.CHANGE]
    for override in overrides:
        if override.type == OverrideType.ADD and _is_field(override.key_or_group, groups):
            check_added_field(cfg, override.key_or_group, groups)
    schema_checked = [o for o in values if o.key_or_group.split(".")[0] in _SCHEMAS]
    for root in sorted({o.key_or_group.split(".")[0] for o in schema_checked}):
        _SCHEMAS[root](cfg[root])
    values = [o for o in values if o not in schema_checked]
    if values:
        defaults = _config_before(hydra_cfg, [o for o in overrides if o not in values])
        for override in values:
            check_type(cfg, override.key_or_group, defaults)


def check_added_field(cfg: DictConfig, key: str, groups: set[str]) -> None:
    """``+key=...``: refuse a field of one of ddsx's config groups that nothing reads."""
    parent_key, _, name = key.rpartition(".")
    if not parent_key or parent_key.split(".")[0] not in groups or name.startswith("_"):
        return  # a new top-level key, or Hydra's _target_/_partial_ of a new object
    parent = OmegaConf.select(cfg, parent_key)
    if not isinstance(parent, DictConfig):
        return
    known = [str(k) for k in parent if str(k) != name and not str(k).startswith("_")]
    if "_target_" in parent:
        parameters = _parameters(parent)
        if parameters is None or name in parameters:
            return  # the target takes it (or takes **kwargs, or cannot be inspected: instantiation decides)
        known += [p for p in parameters if p not in known and not p.startswith("_")]
    elif "." in parent_key or any(isinstance(parent.get(k), DictConfig) for k in known):
        return  # deeper plain nodes, and nodes of objects (callbacks, logger): new entries are allowed
    nearest = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = (
        f"did you mean {parent_key}.{nearest[0]}?" if nearest else f"its fields: {', '.join(sorted(known))}"
    )
    raise ConfigFieldError(f"+{key}: {parent_key} has no field {name!r} and nothing would read it; {hint}")


def check_type(cfg: DictConfig, key: str, defaults: DictConfig | None) -> None:
    """``key=value``: refuse a value that the argument's annotation, or the default's type, rules out."""
    value = _resolved(cfg, key)
    if value is _MISSING or value is None:
        return
    parent_key, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else None
    expected = _annotation(parent, name) if isinstance(parent, DictConfig) else inspect.Parameter.empty
    if expected is not inspect.Parameter.empty:
        if _matches(value, expected) is False:
            raise ConfigFieldError(f"{key}={value!r}: expected {_type_name(expected)}")
        return
    default = _resolved(defaults, key) if defaults is not None else _MISSING
    wanted = _kind(default)
    if wanted is not None and _kind(value) != wanted and not (wanted == "number" and _kind(value) == "int"):
        raise ConfigFieldError(f"{key}={value!r}: expected {wanted} (like its default, {default!r})")


def _is_field(key: str, groups: set[str]) -> bool:
    """A config field (``trainer.max_epochs``), not a group choice (``dataset``) nor Hydra's own."""
    return key not in groups and "/" not in key and not key.startswith("hydra.")


def _config_before(hydra_cfg: DictConfig, overrides: list[Any]) -> DictConfig | None:
    """The job's config without its value overrides (the groups chosen kept): the defaults."""
    from hydra import compose

    try:
        return compose(hydra_cfg.job.config_name, overrides=[o.input_line for o in overrides])
    except Exception:  # noqa: BLE001 - no defaults to compare with: only annotations are checked
        return None


def _resolved(cfg: DictConfig | None, key: str) -> Any:
    try:
        value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=True)
        if isinstance(value, DictConfig | ListConfig):
            return OmegaConf.to_container(value, resolve=True)
        return value
    except Exception:  # noqa: BLE001 - an interpolation that cannot resolve yet: left to the job
        return _MISSING


def _target(node: DictConfig) -> Callable[..., Any] | None:
    from hydra.utils import get_object

    try:
        target = get_object(str(node._target_))
    except Exception:  # noqa: BLE001 - instantiation will report a target that does not import
        return None
    return target if callable(target) else None


def _parameters(node: DictConfig) -> list[str] | None:
    """The argument names the node's ``_target_`` takes; None when it takes ``**kwargs`` or is opaque."""
    target = _target(node)
    try:
        signature = inspect.signature(target) if target is not None else None
    except (TypeError, ValueError):
        return None
    if signature is None or any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return None
    return list(signature.parameters)


def _annotation(node: DictConfig, name: str) -> Any:
    """The ``_target_``'s annotation of argument ``name``, or ``inspect.Parameter.empty``."""
    target = _target(node) if "_target_" in node else None
    if target is None:
        return inspect.Parameter.empty
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # noqa: BLE001 - annotations that do not evaluate are not checked
        return inspect.Parameter.empty
    return hints.get(name, inspect.Parameter.empty)


def _matches(value: Any, annotation: Any) -> bool | None:
    """Whether ``value`` fits ``annotation``: True, False, or None where the annotation is not understood."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        verdicts = [_matches(value, arg) for arg in args]
        return True if True in verdicts else (None if None in verdicts else False)
    if origin is typing.Literal:
        return value in args
    if annotation is type(None):
        return value is None
    if annotation is str:
        return isinstance(value, str)
    simple = {bool: "bool", int: "int", float: "number"}
    if annotation in simple:
        kind = _kind(value)
        return kind == simple[annotation] or (annotation is float and kind == "int")
    container = origin or annotation
    if container in (list, tuple, collections.abc.Sequence):
        return isinstance(value, list | tuple)
    if container in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    return None


def _kind(value: Any) -> str | None:
    """The kind of a default that an override must keep; None where any value may replace it."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return None  # None, strings (paths, names) and unknowns


def _type_name(annotation: Any) -> str:
    """``int or null`` for ``int | None``, the values of a Literal, else the type's name."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_type_name(arg) for arg in args)
    if origin is typing.Literal:
        return " or ".join(repr(arg) for arg in args)
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
