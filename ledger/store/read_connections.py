"""The share of a pool's connections that reads may hold at once.

A read can hold its connection long: behind a lock on a view (a rebuild's swap, a
migration, an operator's ``LOCK TABLE``) until the lock timeout, or through the load of a
long stream as of a moment. With the whole pool theirs, enough such reads held every
connection, and the commands (a spend, a hold, a webhook), which touch none of those
tables, waited for one and were answered busy although the database could take them.

Reads take their connections through ``ReadConnections``, which lets them hold at most
``limit`` at once; the rest of the pool is the commands' alone. Commands take theirs from
the pool itself, as before, and pay nothing for the reads' limit.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ledger.request_scope import get_current_scope


class PoolBusy(TimeoutError):
    """No connection of the pool came free in time (an OSError, as the database's other
    transient failures: loops in the background say so and try again)."""


class ReadConnections:
    """``pool``'s connections as reads take them: at most ``limit`` at once. A read that
    finds them all taken waits for one at most ``wait_seconds`` (``PoolBusy`` then), as a
    request waits for one of the pool's; None: as long as it takes. That is the read's
    whole wait: the pool's connection, when the pool has none free after the slot came,
    is waited for only as long as is left of it (once as long again before)."""

    __slots__ = ("_slots", "in_use", "limit", "pool", "wait_seconds")

    def __init__(self, pool: asyncpg.Pool, limit: int, wait_seconds: float | None) -> None:
        if limit < 1:
            raise ValueError("reads need at least one connection")
        self.pool = pool
        self.limit = limit
        self.wait_seconds = wait_seconds
        self._slots = asyncio.Semaphore(limit)
        self.in_use = 0
        """How many connections reads hold (or are being given) now."""

    @property
    def full(self) -> bool:
        """Whether a read now would wait for a slot (every one taken, or reads queued)."""
        return self._slots.locked()

    def acquire(self, *, timeout: float | None = None) -> _ReadAcquire:
        """``async with connections.acquire() as connection:``, as a pool's (``timeout``:
        for the pool's connection once a slot is taken)."""
        return _ReadAcquire(self, timeout)

    # ``options`` as a pool's methods take them (``timeout``: the views' positions take one).
    async def fetch(self, query: str, *args: Any, **options: Any) -> list[Any]:
        async with self.acquire() as connection:
            return await connection.fetch(query, *args, **options)

    async def fetchrow(self, query: str, *args: Any, **options: Any) -> Any:
        async with self.acquire() as connection:
            return await connection.fetchrow(query, *args, **options)

    async def fetchval(self, query: str, *args: Any, **options: Any) -> Any:
        async with self.acquire() as connection:
            return await connection.fetchval(query, *args, **options)

    async def _take_a_slot(self) -> float | None:
        """Take a slot; the loop's time by which the pool's connection must come too, when
        the slot was waited for (None: it was free, or reads wait without end)."""
        slots, wait = self._slots, self.wait_seconds
        if wait is None or not slots.locked():  # a free one is taken without a timer
            await slots.acquire()
            deadline = None
        else:
            deadline = asyncio.get_running_loop().time() + wait
            # Within a request's scope (ledger/request_scope.py) its reads wait ``wait`` in
            # all, from the first that waits: one that reads several times (its token, a
            # view, the store) waited that long for each before its 503.
            if (once := get_current_scope()) is not None and once.task is asyncio.current_task():
                if once.deadline is None:
                    once.deadline = deadline
                deadline = once.deadline  # what is left of the first wait (perhaps none)
            try:
                async with asyncio.timeout_at(deadline):
                    await slots.acquire()
            except TimeoutError:
                raise self._busy(f"reads may hold {self.limit} of the pool's") from None
        self.in_use += 1
        return deadline

    def _busy(self, why: str) -> PoolBusy:
        return PoolBusy(
            f"no database connection came free for reads within {self.wait_seconds:g} s ({why})"
        )

    def _give_back_a_slot(self) -> None:
        self.in_use -= 1
        self._slots.release()


class _ReadAcquire:
    __slots__ = ("_acquired", "_connections", "_timeout")

    def __init__(self, connections: ReadConnections, timeout: float | None) -> None:
        self._connections = connections
        self._timeout = timeout

    async def __aenter__(self) -> PoolConnectionProxy[Any]:
        connections = self._connections
        deadline = await connections._take_a_slot()
        try:
            if deadline is None:
                self._acquired = connections.pool.acquire(timeout=self._timeout)
                return await self._acquired.__aenter__()
            # The slot took part of the read's wait: the pool's connection gets what is
            # left of it, not a wait of its own as long again.
            left = max(deadline - asyncio.get_running_loop().time(), 0.001)
            timeout = left if self._timeout is None else min(left, self._timeout)
            self._acquired = connections.pool.acquire(timeout=timeout)
            try:
                return await self._acquired.__aenter__()
            except TimeoutError:
                if timeout != left:  # the caller's own timeout, told as it was
                    raise
                raise connections._busy("the rest of the pool was taken too") from None
        except BaseException:
            connections._give_back_a_slot()
            raise

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self._acquired.__aexit__(kind, error, traceback)
        finally:
            self._connections._give_back_a_slot()


Pool = asyncpg.Pool | ReadConnections
"""What the store's and the views' reads take connections from: a pool, or reads' share."""
