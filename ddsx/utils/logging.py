"""One console logger for the whole package; under DDP only rank zero prints."""

from __future__ import annotations

import logging

from lightning.pytorch.utilities import rank_zero_only


def get_logger(name: str) -> logging.Logger:
    """A standard logger whose info/warning/error calls are no-ops on ranks other than zero."""
    logger = logging.getLogger(name)
    for level in ("debug", "info", "warning", "error", "exception", "critical"):
        setattr(logger, level, rank_zero_only(getattr(logger, level)))
    return logger
