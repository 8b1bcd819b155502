"""ddsx's logger under DDP: progress from rank zero only, problems from every rank with its number."""

from __future__ import annotations

import logging

import pytest
from lightning.pytorch.utilities import rank_zero_only

from ddsx.utils.logging import get_logger


@pytest.fixture
def rank(monkeypatch):
    def _set(value: int, world_size: int = 2) -> None:
        monkeypatch.setattr(rank_zero_only, "rank", value)
        monkeypatch.setenv("WORLD_SIZE", str(world_size))

    return _set


def test_other_ranks_report_warnings_and_errors_with_their_rank(rank, caplog) -> None:
    rank(1)
    log = get_logger("ddsx.test_ranked")
    with caplog.at_level(logging.INFO, logger="ddsx.test_ranked"):
        log.info("progress %d", 5)
        log.warning("shard %s is short", "b")
        log.error("device lost")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "[rank 1] shard b is short"),
        (logging.ERROR, "[rank 1] device lost"),
    ]


def test_rank_zero_reports_everything(rank, caplog) -> None:
    rank(0, world_size=1)
    log = get_logger("ddsx.test_ranked")
    with caplog.at_level(logging.INFO, logger="ddsx.test_ranked"):
        log.info("progress %d", 5)
        log.warning("careful")
    # A single process needs no rank in its lines.
    assert [r.getMessage() for r in caplog.records] == ["progress 5", "careful"]
    rank(0, world_size=2)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ddsx.test_ranked"):
        log.info("progress %d", 6)
    assert [r.getMessage() for r in caplog.records] == ["[rank 0] progress 6"]
