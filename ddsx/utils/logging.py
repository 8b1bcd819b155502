"""One console logger for the whole package, aware of the process rank under DDP.

Debug and info lines come from rank zero only (every process would print the same progress);
warnings and errors come from every process, with the rank in the line, because a problem on one
process (a bad shard, a device error) is exactly what must not be hidden.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from typing import Any

from lightning.pytorch.utilities import rank_zero_only


def current_rank() -> int:
    """This process's global rank as Lightning set it at launch (0 outside distributed runs)."""
    return int(getattr(rank_zero_only, "rank", 0) or 0)


class RankedLogger(logging.LoggerAdapter):
    """A ``logging.Logger`` adapter: info and below on rank zero only, warnings and errors on every
    rank, prefixed with ``[rank N]`` when several processes run."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        rank = current_rank()
        if level < logging.WARNING and rank != 0:
            return
        msg, kwargs = self.process(msg, kwargs)
        kwargs.setdefault("stacklevel", 2)
        self.logger.log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        rank = current_rank()
        if rank != 0 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            msg = f"[rank {rank}] {msg}"
        return msg, kwargs


def get_logger(name: str) -> RankedLogger:
    """The package logger for module ``name`` (use as ``log = get_logger(__name__)``)."""
    return RankedLogger(logging.getLogger(name), {})
