"""Rebuilding models from configs that came out of a file (a checkpoint's ``ddsx_config``).

A checkpoint passes ``torch.load(weights_only=True)`` and can still carry a config whose ``_target_``
names any importable callable (``pathlib.Path.write_text`` writes a file of the attacker's choosing).
So a stored config only ever builds one of the constructors ddsx registers (:func:`allowed_targets`);
everything else is refused before ``hydra.utils.instantiate`` sees it. Configs the user composes on
the command line are not affected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra

from ddsx.errors import DDSXError

# The parts of a stored ddsx-train config that ddsx ever rebuilds.
STORED_GROUPS = ("classifier", "denoiser")


def allowed_targets(group: str) -> frozenset[str]:
    """The exact ``_target_`` strings a stored ``classifier`` or ``denoiser`` config may name: the
    constructors ddsx's own options of that group name (``ddsx.registry``), by both the name the
    option uses and the constructor's import path. Exact matches only."""
    from ddsx.registry import targets

    if group not in STORED_GROUPS:
        raise ValueError(f"stored configs rebuild only {STORED_GROUPS}, not {group!r}")
    return targets(group)


# Hydra keys that change what instantiate does besides calling _target_ with keyword arguments.
FORBIDDEN_KEYS = ("_args_", "_partial_", "_recursive_", "_convert_")
# A reserved key's letters: "_target_ ", "_Target_", "__target__" or "_tar\u200bget_" spell one without
# being it. Hydra ignores such a key, but no ddsx file holds one: it was made to slip past this check.
_RESERVED_LETTERS = frozenset(key.strip("_") for key in ("_target_", *FORBIDDEN_KEYS))


class UnsafeConfigError(DDSXError, ValueError):
    """A stored config asks to build something that is not on the allowlist (console scripts show the
    message alone, exit code 2)."""


def _near_miss(name: object) -> bool:
    """Whether ``name`` spells a Hydra reserved key without being it (a plain word such as ``target``,
    an ordinary argument name, is not a near miss)."""
    text = str(name)
    letters = "".join(c for c in text.lower() if c.isascii() and c.isalpha())
    return letters in _RESERVED_LETTERS and text != letters and text != f"_{letters}_"


def check_config(config: Any, allowed: frozenset[str], where: str, key: str = "") -> None:
    """Raise UnsafeConfigError unless every ``_target_`` in ``config`` (nested ones too) is in ``allowed``,
    no Hydra control key (``_args_``, ``_partial_``, ...) or near miss of one (``"_target_ "``) appears
    and no string is an interpolation.

    ``where`` names the source (e.g. "ddsx_config.classifier of /runs/last.ckpt") for the message.
    """
    if isinstance(config, Mapping):
        for name, value in config.items():
            path = f"{key}.{name}" if key else str(name)
            if name == "_target_":
                if not isinstance(value, str) or value not in allowed:
                    raise UnsafeConfigError(
                        f"refusing to build {where}: key '{path}' names _target_ {value!r}, which is not "
                        f"one of ddsx's model constructors ({', '.join(sorted(allowed))}). A config stored "
                        "in a file never chooses what code runs; rebuild the checkpoint with ddsx-train."
                    )
            elif name in FORBIDDEN_KEYS:
                raise UnsafeConfigError(
                    f"refusing to build {where}: key '{path}' ({value!r}) is a Hydra instantiate option that "
                    "ddsx never stores; a config stored in a file may only name a constructor and its arguments"
                )
            elif _near_miss(name):
                raise UnsafeConfigError(
                    f"refusing to build {where}: key {path!r} is a near miss of a Hydra key (_target_, "
                    f"{', '.join(FORBIDDEN_KEYS)}) that ddsx never writes: the file was crafted or damaged"
                )
            check_config(value, allowed, where, path)
    elif isinstance(config, list | tuple):
        for i, value in enumerate(config):
            check_config(value, allowed, where, f"{key}[{i}]")
    elif isinstance(config, str) and "${" in config:
        # Stored configs are resolved before saving; an interpolation could build a new _target_ node
        # (oc.create) or read the environment after this check has run.
        raise UnsafeConfigError(
            f"refusing to build {where}: key '{key}' holds an interpolation {config!r}; stored configs are "
            "saved resolved, so this one was not written by ddsx"
        )


def safe_instantiate(
    config: Mapping[str, Any], allowed: frozenset[str], where: str, key: str = "", **kwargs: Any
) -> Any:
    """``hydra.utils.instantiate(config, **kwargs)`` after ``check_config``: the only way ddsx builds an
    object from a config that was read from a file. ``key`` prefixes the key names in messages."""
    check_config(config, allowed, where, key)
    if "_target_" not in config:
        raise UnsafeConfigError(f"refusing to build {where}: it has no _target_")
    return hydra.utils.instantiate(dict(config), **kwargs)


def check_stored_models(run_config: Mapping[str, Any], where: str) -> None:
    """``check_config`` on the parts of a stored ddsx-train config that ddsx ever rebuilds: the
    classifier and the denoiser (an identity or absent denoiser is fine)."""
    if not isinstance(run_config, Mapping):
        raise UnsafeConfigError(f"{where}: its ddsx_config is a {type(run_config).__name__}, not a mapping")
    for group in STORED_GROUPS:
        node = run_config.get(group)
        if node is not None:
            check_config(node, allowed_targets(group), f"ddsx_config.{group} of {where}", group)
