"""Reads by key that arrive together share one query.

While one query is in flight, the keys asked for meanwhile wait and go together in the
next one: under load the process pays one PostgreSQL round trip per batch instead of
one per request (on these machines a round trip costs the process more CPU than the
rows it brings). Nothing waits for a timer: a read that finds no query running starts
one at once, so a lone read costs what it did. Each query starts after every read in
it was asked, so a shared answer is never older than a query of its own would have
been; what is written is still checked by optimistic concurrency, never by this.

The task that runs the queries takes a connection of the pool for them. With
``keep_idle`` it keeps that connection (and itself) for so many seconds after its last
query, as the group committer's writers keep theirs (ledger/store/commit.py): the next
read, asked meanwhile, is queried at once on it, without a task, a checkout and a
return of the connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from ledger.store.kept_connections import resolve, usable
from ledger.store.read_connections import Pool

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_Waiting = dict[K, list[asyncio.Future[V | None]]]

FetchMany = Callable[[Any, Sequence[K]], Awaitable[dict[K, V]]]
"""What a batch of keys found, read on the connection given (a key found nothing: left out)."""


class SharedReads(Generic[K, V]):
    """``read(key)``: what ``fetch_many`` found for it, or None; see the module."""

    def __init__(self, fetch_many: FetchMany[K, V], pool: Pool, *, keep_idle: float = 0.0) -> None:
        self._fetch_many = fetch_many
        self._pool = pool
        self._keep_idle = keep_idle
        self._asked: _Waiting[K, V] = {}
        self._querying: asyncio.Task[None] | None = None
        self._idle: asyncio.Future[bool] | None = None
        """The querying task's wake-up while it keeps its connection with nothing asked."""
        self.queries = 0
        """Queries run so far (a batch of reads is one)."""

    async def read(self, key: K) -> V | None:
        return await self._ask(key)

    async def read_many(self, keys: Sequence[K]) -> list[V | None]:
        """``read`` of each key, in one query with whatever else is asked meanwhile."""
        answers = [self._ask(key) for key in keys]
        if len(answers) == 1:  # the usual case; gather's own futures cost ~8 µs more
            return [await answers[0]]
        return await asyncio.gather(*answers)

    def _ask(self, key: K) -> asyncio.Future[V | None]:
        answer: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._asked.setdefault(key, []).append(answer)
        if self._querying is None:
            self._querying = asyncio.create_task(self._query_while_asked())
        elif (idle := self._idle) is not None and not idle.done():
            idle.set_result(True)
        return answer

    async def _query_while_asked(self) -> None:
        batch: _Waiting[K, V] = {}
        kept: _Kept | None = None
        try:
            while self._asked or (kept is not None and await self._asked_within_keep_idle()):
                batch, self._asked = self._asked, {}
                self.queries += 1
                try:
                    if kept is None or not usable(kept.connection):
                        await _give_back(kept)
                        kept = None
                        kept = await _Kept.taken_from(self._pool)
                    found = await self._fetch_many(kept.connection, list(batch))
                except Exception as error:  # each read gets the failure its own query would
                    _settle(batch, {}, error)
                    await _give_back(kept)  # the connection may be broken
                    kept = None
                    continue
                _settle(batch, found, None)
        finally:
            self._querying = None
            # Cancelled (shutdown): nobody is left to answer the reads still waiting.
            _settle(batch, {}, asyncio.CancelledError())
            _settle(self._asked, {}, asyncio.CancelledError())
            self._asked = {}
            # Reads asked from now on start a task (and take a connection) of their own.
            await _give_back(kept)

    async def _asked_within_keep_idle(self) -> bool:
        """Whether a read is asked within ``keep_idle`` seconds (False at once without)."""
        if self._keep_idle <= 0:
            return False
        loop = asyncio.get_running_loop()
        self._idle = wake = loop.create_future()
        timer = loop.call_later(self._keep_idle, resolve, wake, False)
        try:
            # Or asked after the timer ended the wait and before this task resumed: that
            # read found the task here and woke nothing; a stop now would cancel it.
            return await wake or bool(self._asked)
        finally:
            timer.cancel()
            self._idle = None


class _Kept:
    """A connection of the pool, held through its acquire context (a pool's, or the reads'
    share's: ledger/store/read_connections.py) until given back."""

    def __init__(self, acquired: Any, connection: Any) -> None:
        self.acquired = acquired
        self.connection = connection

    @classmethod
    async def taken_from(cls, pool: Pool) -> _Kept:
        acquired = pool.acquire()
        return cls(acquired, await acquired.__aenter__())


async def _give_back(kept: _Kept | None) -> None:
    """Give a kept connection back to the pool (a broken one too: the pool replaces it)."""
    if kept is not None:
        with contextlib.suppress(Exception):
            await kept.acquired.__aexit__(None, None, None)


def _settle(batch: _Waiting[K, V], found: dict[K, V], error: BaseException | None) -> None:
    for key, answers in batch.items():
        for answer in answers:
            if answer.done():  # answered already, or its reader gave up (a timeout)
                continue
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(found.get(key))
