"""The projector: tails the store in commit order and keeps every view up to date.

Each batch is one transaction holding the view's rows and its new position,
with the position row locked first (``FOR UPDATE``): a projector killed
mid-batch leaves nothing half-applied, and two projectors never apply the
same batch twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

import asyncpg

from ledger.store.event_store import NOTIFY_CHANNEL, Connection, EventStore
from ledger.store.wakeups import listen, wait_for_either
from projections.balances import BalancesProjection
from projections.events import ProjectedEvent, projected
from projections.holds import HoldsProjection
from projections.notifications import NotificationsProjection
from projections.purchases import PurchasesProjection
from projections.statement import StatementProjection

log = logging.getLogger(__name__)

BATCH_SIZE = 500
# Without a notification (or while an old transaction holds the watermark back)
# the projector still looks this often.
POLL_SECONDS = 0.5


class Projection(Protocol):
    """A view: a name for its position, a table, and how each event changes it."""

    name: str
    table: str

    async def apply(
        self, connection: Connection, table: str, events: Sequence[ProjectedEvent]
    ) -> None:
        """Fold a batch of events, in commit order, into ``table``."""


def all_projections() -> list[Projection]:
    """Every view the service serves, in the order they are applied."""
    return [
        BalancesProjection(),
        PurchasesProjection(),
        StatementProjection(),
        HoldsProjection(),
        NotificationsProjection(),
    ]


async def position_of(connection: Connection, name: str) -> int:
    """Where the projection has read up to (0 for a new one)."""
    found = await connection.fetchval(
        "SELECT position FROM projection_positions WHERE name = $1", name
    )
    return int(found or 0)


async def apply_batch(
    store: EventStore, projection: Projection, batch_size: int = BATCH_SIZE
) -> int:
    """Apply the next batch in one transaction with the new position; return its size."""
    async with store.pool.acquire() as connection, connection.transaction():
        await connection.execute(
            "INSERT INTO projection_positions (name) VALUES ($1) ON CONFLICT DO NOTHING",
            projection.name,
        )
        position = await connection.fetchval(
            "SELECT position FROM projection_positions WHERE name = $1 FOR UPDATE",
            projection.name,
        )
        events = await store.read_all(after=position, limit=batch_size, connection=connection)
        if events:
            await projection.apply(connection, projection.table, [projected(e) for e in events])
        if events:
            await connection.execute(
                """UPDATE projection_positions SET position = $2, updated_at = now()
                   WHERE name = $1""",
                projection.name,
                events[-1].notification_id,
            )
        return len(events)


async def catch_up(
    store: EventStore, projections: Sequence[Projection], batch_size: int = BATCH_SIZE
) -> int:
    """Apply everything visible now to every projection; return how many events were applied."""
    applied = 0
    behind = list(projections)
    while behind:  # a batch of each in turn, so no view waits while another catches up
        counts = [await apply_batch(store, projection, batch_size) for projection in behind]
        applied += sum(counts)
        behind = [p for p, count in zip(behind, counts, strict=True) if count]
    return applied


class Projector:
    """Runs the projections until stopped: wakes on NOTIFY, polls as a fallback."""

    def __init__(
        self,
        store: EventStore,
        database_url: str,
        projections: Sequence[Projection] | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.database_url = database_url
        self.projections = list(projections or all_projections())
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Catch up, then follow new events until ``stop`` is set."""
        listener = await self._listen()
        try:
            log.info("projector started: %s", ", ".join(p.name for p in self.projections))
            while not stop.is_set():
                self._wake.clear()
                try:
                    applied = await catch_up(self.store, self.projections, self.batch_size)
                # InternalClientError: a connection PostgreSQL cut off mid-operation,
                # seen on its way back to the pool when the server restarts.
                except (
                    OSError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                    asyncpg.InternalClientError,
                ) as error:
                    log.warning("projector could not apply a batch (will retry): %s", error)
                    applied = 0
                if applied:
                    log.debug("projected %d events", applied)
                    continue
                await wait_for_either(self._wake, stop, seconds=POLL_SECONDS)
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close()

    async def _listen(self) -> asyncpg.Connection | None:
        return await listen(
            self.database_url,
            NOTIFY_CHANNEL,
            self._wake,
            who="projector",
            poll_seconds=POLL_SECONDS,
        )
