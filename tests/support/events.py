"""Reading what the store recorded, for assertions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec

from ledger.store.event_store import EventStore, RecordedEvent
from ledger.store.mapper import event_type_name


async def settled(store: EventStore) -> None:
    """Wait until every append that began before now has committed or failed, so that
    a read behind the watermark sees all of them (another transaction on the server,
    even of another database, holds the watermark back for a moment)."""
    await store.wait_for_appends_before(datetime.now(UTC))


async def tail_position(store: EventStore) -> int:
    """The position after every event committed before now."""
    await settled(store)
    position = 0
    while batch := await store.read_all(after=position, limit=1000):
        position = batch[-1].notification_id
    return position


async def events_since(store: EventStore, position: int) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) of every event after ``position`` committed before now, in commit order."""
    await settled(store)
    found: list[RecordedEvent] = []
    while batch := await store.read_all(after=position, limit=1000):
        found.extend(batch)
        position = batch[-1].notification_id
    return [(event_type_name(e.topic), msgspec.json.decode(e.state)) for e in found]


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
    from projections.runner import all_projections, catch_up

    await settled(store)
    return await catch_up(store, all_projections(), **options)
