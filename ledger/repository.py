"""Load aggregates from their events and save their new events."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate, Snapshot

from ledger.store.event_store import ConcurrencyConflict, Connection, EventStore
from ledger.store.mapper import MsgspecMapper

A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")

MAX_ATTEMPTS = 12
SNAPSHOT_EVERY = 100
"""Events between snapshots: loading replays at most this many after the newest one."""


class Repository:
    """Aggregates in and out of the event store, through the msgspec mapper."""

    def __init__(self, store: EventStore, mapper: MsgspecMapper | None = None) -> None:
        self.store = store
        self.mapper = mapper or MsgspecMapper()

    async def get(
        self, cls: type[A], aggregate_id: UUID, *, as_of: datetime | None = None
    ) -> A | None:
        """The aggregate as its events leave it (up to ``as_of``), or None if none yet.

        Starts from the newest snapshot that fits and replays only the events after it.
        """
        aggregate: Any = None
        snapshot = await self.store.latest_snapshot(aggregate_id, recorded_until=as_of)
        if snapshot is not None:
            aggregate = self.mapper.to_domain_event(snapshot).mutate(None)
        after = aggregate.version if aggregate is not None else 0
        for recorded in await self.store.load(
            aggregate_id, after_version=after, recorded_until=as_of
        ):
            aggregate = self.mapper.to_domain_event(recorded).mutate(aggregate)
        if aggregate is not None and not isinstance(aggregate, cls):
            raise TypeError(f"stream {aggregate_id} holds a {type(aggregate).__name__}")
        return aggregate

    async def exists(self, aggregate_id: UUID) -> bool:
        """Whether the aggregate has been created."""
        return await self.store.exists(aggregate_id)

    async def save(self, *aggregates: Aggregate, connection: Connection | None = None) -> list[int]:
        """Append the aggregates' pending events in one transaction (with any snapshots due)."""
        if connection is None:
            async with self.store.transaction() as own:
                return await self.save(*aggregates, connection=own)
        due = [a for a in aggregates if _snapshot_due(a)]
        stored = [
            self.mapper.to_stored_event(domain_event)
            for aggregate in aggregates
            for domain_event in aggregate.collect_events()
        ]
        positions = await self.store.append(stored, connection)
        for aggregate in due:
            snapshot = Snapshot.take(aggregate)
            await self.store.save_snapshot(connection, self.mapper.to_stored_event(snapshot))
        return positions


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
                raise
            # Exponential backoff with full jitter spreads out writers that collided
            # so they do not collide again (about 4 s in all before giving up).
            await asyncio.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 10)))  # noqa: S311
    raise AssertionError("unreachable")
