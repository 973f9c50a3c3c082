"""Rebuild a view from position zero into a fresh table, then swap it in.

The live view keeps answering while the new one fills. The swap happens in
one transaction that first locks the live position row, which pauses the
live projector for that view, applies what arrived meanwhile, renames the
tables and moves the position.
"""

from __future__ import annotations

from collections.abc import Callable

from ledger.store.event_store import Connection, EventStore
from projections.events import projected
from projections.runner import Projection

REBUILD_BATCH = 2000


async def _apply_next_batch(
    connection: Connection, store: EventStore, projection: Projection, table: str, after: int
) -> tuple[int, int]:
    """Apply one batch into ``table``; return (events applied, new position)."""
    events = await store.read_all(after=after, limit=REBUILD_BATCH, connection=connection)
    if events:
        await projection.apply(connection, table, [projected(e) for e in events])
    return len(events), (events[-1].notification_id if events else after)


async def rebuild(
    store: EventStore, projection: Projection, on_progress: Callable[[int, int], None]
) -> int:
    """Rebuild ``projection``'s table; return the position the new view is at.

    ``on_progress(events_applied, position)`` is called after every batch.
    """
    fresh, old = f"{projection.table}__rebuild", f"{projection.table}__old"
    position = 0
    async with store.pool.acquire() as connection:
        await connection.execute(f"DROP TABLE IF EXISTS {fresh}")
        await connection.execute(f"CREATE TABLE {fresh} (LIKE {projection.table} INCLUDING ALL)")
        while True:  # one transaction per batch: constant memory, no long transaction
            async with connection.transaction():
                count, position = await _apply_next_batch(
                    connection, store, projection, fresh, position
                )
            if not count:
                break
            on_progress(count, position)
        async with connection.transaction():
            await connection.execute(
                "INSERT INTO projection_positions (name) VALUES ($1) ON CONFLICT DO NOTHING",
                projection.name,
            )
            await connection.execute(
                "SELECT 1 FROM projection_positions WHERE name = $1 FOR UPDATE", projection.name
            )
            while True:  # what arrived since, with the live projector paused
                count, position = await _apply_next_batch(
                    connection, store, projection, fresh, position
                )
                if not count:
                    break
                on_progress(count, position)
            await connection.execute(f"ALTER TABLE {projection.table} RENAME TO {old}")
            await connection.execute(f"ALTER TABLE {fresh} RENAME TO {projection.table}")
            await connection.execute(f"DROP TABLE {old}")
            await connection.execute(
                """UPDATE projection_positions SET position = $2, updated_at = now()
                   WHERE name = $1""",
                projection.name,
                position,
            )
    return position
