"""Load aggregates from their events and save their new events."""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate, Snapshot

from ledger.store import stats
from ledger.store.event_store import ConcurrencyConflict, Connection, EventStore
from ledger.store.group_commit import GroupCommitter, IdempotencyRecord, UnitOfWork
from ledger.store.mapper import MsgspecMapper

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")

MAX_ATTEMPTS = 12
SNAPSHOT_EVERY = 100
"""Events between snapshots: loading replays at most this many after the newest one."""
CACHE_SIZE = 50_000
"""Aggregates kept in memory, least recently used dropped first."""


class Repository:
    """Aggregates in and out of the event store, through the msgspec mapper.

    Keeps recently used aggregates in memory as they were after their last
    committed write. That is safe across processes because every append names
    the version it expects: an aggregate another process changed meanwhile
    makes the append conflict, which drops it from the cache, and the command
    is decided again on a fresh load. Decisions that write nothing (a refused
    spend) must not trust the cache: callers ask for ``fresh=True`` then.
    """

    def __init__(
        self,
        store: EventStore,
        mapper: MsgspecMapper | None = None,
        *,
        committer: GroupCommitter | None = None,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.store = store
        self.mapper = mapper or MsgspecMapper()
        self.committer = committer or GroupCommitter(store.pool)
        self.cache_size = cache_size
        self._cache: OrderedDict[UUID, Aggregate] = OrderedDict()

    async def get(
        self,
        cls: type[A],
        aggregate_id: UUID,
        *,
        as_of: datetime | None = None,
        fresh: bool = False,
    ) -> A | None:
        """The aggregate as its events leave it (up to ``as_of``), or None if none yet.

        Comes from memory when it can (not for ``as_of`` or ``fresh``); otherwise
        starts from the newest snapshot that fits and replays the events after it.
        """
        if as_of is None and not fresh and (cached := self._cache.get(aggregate_id)):
            self._cache.move_to_end(aggregate_id)
            return _checked(cls, _clone(cached), aggregate_id)
        aggregate: Any = None
        snapshot, events = await self.store.load_from_snapshot(aggregate_id, recorded_until=as_of)
        if snapshot is not None:
            aggregate = self.mapper.to_domain_event(snapshot).mutate(None)
        for recorded in events:
            aggregate = self.mapper.to_domain_event(recorded).mutate(aggregate)
        if aggregate is not None and as_of is None:
            self._remember(aggregate)
        return _checked(cls, aggregate, aggregate_id)

    async def exists(self, aggregate_id: UUID) -> bool:
        """Whether the aggregate has been created."""
        return aggregate_id in self._cache or await self.store.exists(aggregate_id)

    async def save(self, *aggregates: Aggregate, connection: Connection | None = None) -> list[int]:
        """Append the aggregates' pending events in one transaction (with any snapshots due).

        With ``connection`` the caller's transaction may still fail after this
        returns, so the aggregates are dropped from memory rather than kept.
        """
        if connection is None:
            try:
                async with self.store.transaction() as own:
                    positions = await self._append(aggregates, own)
            except ConcurrencyConflict:
                self._forget(*aggregates)
                raise
            for aggregate in aggregates:
                self._remember(aggregate)
            return positions
        self._forget(*aggregates)
        return await self._append(aggregates, connection)

    async def commit(
        self, *aggregates: Aggregate, keys: Sequence[IdempotencyRecord] = ()
    ) -> list[int]:
        """Append the aggregates' events and claim ``keys``, together, by group commit.

        Raises ConcurrencyConflict or IdempotencyKeyTaken; nothing is written then.
        """
        snapshots = [self._snapshot(a) for a in aggregates if _snapshot_due(a)]
        events = [self.mapper.to_stored_event(e) for a in aggregates for e in a.collect_events()]
        try:
            positions = await self.committer.commit(
                UnitOfWork(events=events, keys=keys, snapshots=snapshots)
            )
        except BaseException:
            self._forget(*aggregates)
            raise
        for event in events:
            stats.events_appended[event.topic] += 1
        for aggregate in aggregates:
            self._remember(aggregate)
        return positions

    async def _append(self, aggregates: tuple[Aggregate, ...], connection: Connection) -> list[int]:
        due = [a for a in aggregates if _snapshot_due(a)]
        stored = [
            self.mapper.to_stored_event(domain_event)
            for aggregate in aggregates
            for domain_event in aggregate.collect_events()
        ]
        positions = await self.store.append(stored, connection)
        for event in stored:
            stats.events_appended[event.topic] += 1
        for aggregate in due:
            await self.store.save_snapshot(connection, self._snapshot(aggregate))
        return positions

    def _snapshot(self, aggregate: Aggregate) -> Any:
        # Taken after the pending events were applied, i.e. at the new version.
        return self.mapper.to_stored_event(Snapshot.take(aggregate))

    def _remember(self, aggregate: Aggregate) -> None:
        if self.cache_size <= 0:
            return
        known = self._cache.get(aggregate.id)
        if known is None or known.version <= aggregate.version:
            self._cache[aggregate.id] = _clone(aggregate)
            self._cache.move_to_end(aggregate.id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _forget(self, *aggregates: Aggregate) -> None:
        for aggregate in aggregates:
            self._cache.pop(aggregate.id, None)


def _clone(aggregate: Any) -> Any:
    """A copy to decide on: the fields are immutable values, only the pending list is not."""
    copy = object.__new__(type(aggregate))
    copy.__dict__.update(aggregate.__dict__)
    copy.__dict__["_pending_events"] = []
    return copy


def _checked(cls: type[A], aggregate: Any, aggregate_id: UUID) -> A | None:
    if aggregate is not None and not isinstance(aggregate, cls):
        raise TypeError(f"stream {aggregate_id} holds a {type(aggregate).__name__}")
    return aggregate  # type: ignore[no-any-return]


def _snapshot_due(aggregate: Aggregate) -> bool:
    """Whether this save carries the aggregate past a multiple of SNAPSHOT_EVERY."""
    pending = len(aggregate.pending_events)
    before = aggregate.version - pending
    return pending > 0 and before // SNAPSHOT_EVERY < aggregate.version // SNAPSHOT_EVERY


async def retry_on_conflict(command: Callable[[], Awaitable[T]], attempts: int = MAX_ATTEMPTS) -> T:
    """Run load-decide-append again when another writer got there first.

    ``command`` must reload what it decides on each time: after a conflict its
    pending events are gone and its aggregate is stale.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await command()
        except ConcurrencyConflict:
            if attempt == attempts:
                stats.conflicts["gave_up"] += 1
                raise
            stats.conflicts["retried"] += 1
            # Exponential backoff with full jitter spreads out writers that collided
            # so they do not collide again (about 4 s in all before giving up).
            await asyncio.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 10)))  # noqa: S311
    raise AssertionError("unreachable")
