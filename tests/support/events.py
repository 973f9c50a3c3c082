"""Reading what the store recorded, for assertions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec

from ledger.store.event_store import EventStore, RecordedEvent
from ledger.store.mapper import event_type_name

if TYPE_CHECKING:
    from projections.runner import Projection


async def settled(store: EventStore, seconds: float = 2.0) -> int:
    """Wait until every append that began before now has committed or failed, so that
    a read behind the watermark sees all of them (another transaction on the server,
    even of another database, holds the watermark back for a moment). Returns the
    position of the last event recorded before now (0: none), which is final then."""
    moment = datetime.now(UTC)
    await store.wait_for_appends_before(moment, seconds=seconds)
    found = await store.pool.fetchval(
        """SELECT notification_id FROM stored_events WHERE recorded_at <= $1
           ORDER BY notification_id DESC LIMIT 1""",
        moment,
    )
    return int(found or 0)


async def views_past(
    store: EventStore,
    position: int,
    projections: Sequence[Projection] | None = None,
    left_at: dict[str, tuple[int, int]] | None = None,
    seconds: float = 30.0,
    batch_size: int | None = None,
) -> int:
    """Catch the views up until each is at ``position`` or past it; returns the events
    applied. One ``catch_up`` after ``settled`` is not enough: it stops at the watermark
    of its own look, which can stand lower than at ``settled``'s. A transaction of another
    database running at both looks is passed over at the first; if it ends between the
    second's snapshot and its read of the sessions, it counts there (``WATERMARK``), and
    the catch-up stops before events it would pass a moment later."""
    from projections.runner import BATCH_SIZE, all_projections, catch_up

    projections = all_projections() if projections is None else projections
    names = [p.name for p in projections]
    deadline = time.monotonic() + seconds
    total = 0
    while True:
        total += await catch_up(store, projections, batch_size or BATCH_SIZE, left_at)
        behind = await store.pool.fetchval(
            """SELECT count(*) < cardinality($1::text[]) OR min(position) < $2
               FROM projection_positions WHERE name = any($1::text[])""",
            names,
            position,
        )
        if position == 0 or not behind:
            return total
        if time.monotonic() > deadline:
            raise AssertionError(f"the views did not reach position {position}")
        await asyncio.sleep(0.01)


async def tail_position(store: EventStore) -> int:
    """The position after every event committed before now."""
    return await settled(store)


async def recorded_since(store: EventStore, position: int) -> list[RecordedEvent]:
    """Every event after ``position`` committed before now, in commit order. One
    ``read_all`` (or a loop until one comes back empty) is not enough: it stops at its own
    look's watermark, which can stand lower than at ``settled``'s (see ``views_past``)."""
    tail = await settled(store)
    deadline = time.monotonic() + 30
    found: list[RecordedEvent] = []
    while position < tail:
        if batch := await store.read_all(after=position, limit=1000):
            found.extend(batch)
            position = batch[-1].notification_id
        elif time.monotonic() > deadline:
            raise AssertionError(f"the events up to position {tail} were not all read")
        else:
            await asyncio.sleep(0.01)
    return found


async def events_since(store: EventStore, position: int) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of every event after ``position`` committed before now, in commit order."""
    return [
        (event_type_name(e.topic), msgspec.json.decode(e.state))
        for e in await recorded_since(store, position)
    ]


async def stream_events(store: EventStore, stream_id: UUID) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of one aggregate's events, in version order."""
    return [
        (event_type_name(e.topic), msgspec.json.decode(e.state))
        for e in await store.load(stream_id)
    ]


async def caught_up(store: EventStore, **options: Any) -> int:
    """Every view caught up with every event committed before now (the projector's
    ``catch_up`` alone stops at the watermark, which a transaction elsewhere on the
    server can hold back for a moment)."""
    return await views_past(store, await settled(store), **options)
