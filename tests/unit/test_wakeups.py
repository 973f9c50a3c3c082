"""A background loop's LISTEN that cannot be made while the database is away."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from ledger.store import wakeups


def _closed_port() -> int:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return int(free.getsockname()[1])


async def test_a_listen_that_keeps_failing_is_said_once_not_at_every_try(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Said at every try (every 5 s), the projector's and the dispatcher's lines were most of
    the log while PostgreSQL was away; now once, then every 10 minutes (FailingLoop)."""
    monkeypatch.setattr(wakeups, "RELISTEN_SECONDS", 0.0)
    listening = wakeups.Listening(
        f"postgresql://nobody@127.0.0.1:{_closed_port()}/ledger",
        "ledger_events",
        asyncio.Event(),
        who="projector",
        poll_seconds=0.5,
    )
    with caplog.at_level(logging.DEBUG, logger=wakeups.__name__):
        for _ in range(4):
            await listening.keep()

    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert listening.connection is None
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].getMessage().startswith("projector cannot LISTEN (")
    assert "polling every 0.5s; said again every 10 minutes while it lasts" in said[0].getMessage()
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 3
