"""Silence the warnings that are known and harmless in ddsx's use; every other warning stays.

Each filter matches one message of one library, so that a new or unrelated warning still shows:

- Lightning's "Found N module(s) in eval mode at the start of training": ddsx keeps the frozen
  denoiser (and the identity denoiser) in eval mode on purpose, so every DDS run counts them.
- Lightning's pytree deprecation (``isinstance(treespec, LeafSpec)`` is deprecated): raised inside
  Lightning's own code by newer torch, nothing a ddsx user can change.
- Lightning's litlogger tip, printed at every Trainer start: an advertisement, not a diagnosis.
- W&B's "The anonymous setting has no effect": Lightning's WandbLogger passes ``anonymous=None`` on
  every run (see :func:`wandb_logger`).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

# (message regex, module regex) of Python warnings; both must match for a warning to be dropped.
KNOWN_WARNINGS = (
    (r"Found \d+ module\(s\) in eval mode at the start of training", r"lightning\.pytorch\.loops\.fit_loop"),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\.pytorch\.utilities\._pytree"),
)
# Start of log messages of Lightning's rank-zero logger that are dropped.
KNOWN_LOG_MESSAGES = ("💡 Tip: For seamless cloud logging and experiment tracking",)
LIGHTNING_RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)
KNOWN_WANDB_WARNINGS = ("The anonymous setting has no effect",)


class _DropKnownMessages(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(KNOWN_LOG_MESSAGES)


_LOG_FILTER = _DropKnownMessages()


def silence_known_warnings() -> None:
    """Install the filters (idempotent). Called by every console script before anything else runs."""
    for message, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
    for name in LIGHTNING_RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _LOG_FILTER not in logger.filters:
            logger.addFilter(_LOG_FILTER)


def wandb_logger(**kwargs: Any):
    """Lightning's WandbLogger, with W&B's warning about the ``anonymous`` setting Lightning always
    passes filtered out (conf/logger/wandb.yaml builds it; W&B is imported only when it is used)."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    if not getattr(wandb.termwarn, "_ddsx_filtered", False):
        termwarn = wandb.termwarn

        def filtered_termwarn(string: str, *args: Any, **kw: Any) -> None:
            if not str(string).startswith(KNOWN_WANDB_WARNINGS):
                termwarn(string, *args, **kw)

        filtered_termwarn._ddsx_filtered = True  # type: ignore[attr-defined]
        wandb.termwarn = filtered_termwarn
    return WandbLogger(**kwargs)
