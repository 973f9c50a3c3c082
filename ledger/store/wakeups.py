"""Waking background loops: LISTEN on a channel, and wait for a wake-up, a stop or a timeout."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from ledger.failing_loop import FailingLoop
from ledger.store.event_store import DATABASE_ERRORS

log = logging.getLogger(__name__)

RELISTEN_SECONDS = 5.0
"""How often a ``Listening`` whose connection was lost (or never made) tries LISTEN again."""


async def listen(database_url: str, channel: str, wake: asyncio.Event) -> asyncpg.Connection:
    """A connection that sets ``wake`` on every NOTIFY on ``channel``."""
    connection: asyncpg.Connection = await asyncpg.connect(database_url, timeout=5)
    await connection.add_listener(channel, lambda *_: wake.set())
    return connection


async def wait_for_either(first: asyncio.Event, second: asyncio.Event, seconds: float) -> None:
    """Return when either event is set, or after ``seconds``."""
    waits = [asyncio.create_task(first.wait()), asyncio.create_task(second.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


class Listening:
    """``listen``, made again once its connection is lost.

    A PostgreSQL restart, a failover or a terminated backend closes the connection that
    LISTENs; a loop that only polled from then on answered every write a poll interval
    late (the projector's views 0.5 s behind each spend, until the process restarted).
    ``keep()``, called on each turn of the loop before it waits, listens again when the
    connection is closed, at most every ``RELISTEN_SECONDS``, and does nothing otherwise.
    A LISTEN that keeps failing is said once, then now and then (``FailingLoop``): every
    ``RELISTEN_SECONDS``, it was most of the log while the database was away.
    """

    def __init__(
        self, database_url: str, channel: str, wake: asyncio.Event, *, who: str, poll_seconds: float
    ) -> None:
        self.database_url = database_url
        self.channel = channel
        self.wake = wake
        self.who = who
        self.poll_seconds = poll_seconds
        self.connection: asyncpg.Connection | None = None
        self._tried_at: float | None = None
        self._failing = FailingLoop(log, f"{who}'s LISTEN on {channel}")

    async def keep(self) -> None:
        """LISTEN, if the connection for it is not open and the last try is long enough ago."""
        if self.connection is not None and not self.connection.is_closed():
            return
        now = time.monotonic()
        if self._tried_at is not None and now - self._tried_at < RELISTEN_SECONDS:
            return
        lost = self.connection is not None
        self._tried_at = now
        try:
            self.connection = await listen(self.database_url, self.channel, self.wake)
        except DATABASE_ERRORS as error:
            self.connection = None
            self._failing.failed(
                logging.WARNING,
                f"{self.who} cannot LISTEN ({error}): polling every {self.poll_seconds:.1f}s",
            )
            return
        self._failing.succeeded()
        if lost:
            log.info("%s listens on %s again", self.who, self.channel)

    async def close(self) -> None:
        if self.connection is not None:
            try:
                await self.connection.close()
            except Exception:  # already lost: nothing to close
                self.connection.terminate()
            self.connection = None
