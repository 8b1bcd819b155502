"""Silence the warnings that are known and harmless in ddsx's use; every other warning stays.

Each filter matches one message of one library, so that a new or unrelated warning still shows:

- Lightning's "Found N module(s) in eval mode at the start of training": ddsx keeps the frozen
  denoiser (and the identity denoiser) in eval mode on purpose, so every DDS run counts them.
- Lightning's pytree deprecation (``isinstance(treespec, LeafSpec)`` is deprecated): raised inside
  Lightning's own code by newer torch, nothing a ddsx user can change.
- Lightning's litlogger tip, printed at every Trainer start: an advertisement, not a diagnosis.

Only Python's own means are used (``warnings.filterwarnings``, a ``logging.Filter``), never a library
function replaced. So W&B's one line "The anonymous setting has no effect" (Lightning's WandbLogger
passes ``anonymous=None`` on every run) still shows once per run: W&B prints it to stderr itself,
outside both, and no public W&B setting drops that one message alone (docs/public_apis.md).
"""

from __future__ import annotations

import logging
import warnings

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
