"""Waking background loops: LISTEN on a channel, and wait for a wake-up, a stop or a timeout."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from ledger.store.event_store import DATABASE_ERRORS

log = logging.getLogger(__name__)


async def listen(
    database_url: str, channel: str, wake: asyncio.Event, *, who: str, poll_seconds: float
) -> asyncpg.Connection | None:
    """A connection that sets ``wake`` on every NOTIFY on ``channel``; None if it cannot."""
    try:
        connection: asyncpg.Connection = await asyncpg.connect(database_url, timeout=5)
        await connection.add_listener(channel, lambda *_: wake.set())
    except DATABASE_ERRORS as error:
        log.warning("%s cannot LISTEN (%s): polling every %.1fs", who, error, poll_seconds)
        return None
    return connection


async def wait_for_either(first: asyncio.Event, second: asyncio.Event, seconds: float) -> None:
    """Return when either event is set, or after ``seconds``."""
    waits = [asyncio.create_task(first.wait()), asyncio.create_task(second.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
