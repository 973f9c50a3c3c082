"""Reads by key that arrive together share one query.

While one query is in flight, the keys asked for meanwhile wait and go together in the
next one: under load the process pays one PostgreSQL round trip per batch instead of
one per request (on these machines a round trip costs the process more CPU than the
rows it brings). Nothing waits for a timer: a read that finds no query running starts
one at once, so a lone read costs what it did. Each query starts after every read in
it was asked, so a shared answer is never older than a query of its own would have
been; what is written is still checked by optimistic concurrency, never by this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_Waiting = dict[K, list[asyncio.Future[V | None]]]


class SharedReads(Generic[K, V]):
    """``read(key)``: what ``fetch_many`` found for it, or None; see the module."""

    def __init__(self, fetch_many: Callable[[Sequence[K]], Awaitable[dict[K, V]]]) -> None:
        self._fetch_many = fetch_many
        self._asked: _Waiting[K, V] = {}
        self._querying: asyncio.Task[None] | None = None
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
        return answer

    async def _query_while_asked(self) -> None:
        batch: _Waiting[K, V] = {}
        try:
            while self._asked:
                batch, self._asked = self._asked, {}
                self.queries += 1
                try:
                    found = await self._fetch_many(list(batch))
                except Exception as error:  # each read gets the failure its own query would
                    _settle(batch, {}, error)
                    continue
                _settle(batch, found, None)
        finally:
            self._querying = None
            # Cancelled (shutdown): nobody is left to answer the reads still waiting.
            _settle(batch, {}, asyncio.CancelledError())
            _settle(self._asked, {}, asyncio.CancelledError())
            self._asked = {}


def _settle(batch: _Waiting[K, V], found: dict[K, V], error: BaseException | None) -> None:
    for key, answers in batch.items():
        for answer in answers:
            if answer.done():  # answered already, or its reader gave up (a timeout)
                continue
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(found.get(key))
