"""The append-only event store on PostgreSQL, through asyncpg.

Ordering: readers tail the table by ``notification_id`` and must never pass
over an event that commits after a later-numbered one. The eventsourcing
library gets that by taking ``LOCK TABLE ... IN EXCLUSIVE MODE`` until commit,
so writers commit one at a time. We use a transaction-id watermark instead:

* ``append_events()`` (SQL, migration 0001) hands out a transaction id and a
  block of notification ids under a short advisory lock that is released
  before commit, so notification order equals transaction-id order while the
  expensive part, the commit and its fsync, runs in parallel.
* Readers only return rows whose writing transaction is older than
  ``pg_snapshot_xmin(pg_current_snapshot())``, the oldest transaction still
  running. A row with a lower notification id than one returned belongs to an
  older transaction, which has therefore ended: it is visible already or it
  never will be.

``bench/append_rate.py`` measures both designs against plain inserts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy
from eventsourcing.persistence import StoredEvent

Connection = asyncpg.Connection | PoolConnectionProxy
"""A connection of our own or one lent by the pool: both take the same calls."""

NOTIFY_CHANNEL = "ledger_events"

_APPEND = "SELECT notification_id FROM append_events($1, $2, $3, $4)"

_VISIBLE = "transaction_id < pg_snapshot_xmin(pg_current_snapshot())"

_COLUMNS = "originator_id, originator_version, topic, state, notification_id, recorded_at, hash"


class ConcurrencyConflict(Exception):
    """Another writer appended to one of these aggregates first: reload and retry."""


class RecordedEvent(msgspec.Struct, frozen=True):
    """A stored event as read back, with its global position and time recorded."""

    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes
    notification_id: int
    recorded_at: datetime
    hash: bytes


def _recorded(row: asyncpg.Record | tuple[Any, ...]) -> RecordedEvent:
    return RecordedEvent(
        originator_id=row[0],
        originator_version=row[1],
        topic=row[2],
        state=row[3],
        notification_id=row[4],
        recorded_at=row[5],
        hash=row[6],
    )


class EventStore:
    """Appends events with optimistic concurrency and reads them back in order."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection inside a transaction, for an append plus rows that go with it."""
        async with self.pool.acquire() as connection, connection.transaction():
            yield connection

    async def append(
        self, events: Sequence[StoredEvent], connection: Connection | None = None
    ) -> list[int]:
        """Append events atomically; return their notification ids.

        Each event's ``originator_version`` is the expected next version of its
        aggregate: if any is taken, nothing is written and ``ConcurrencyConflict``
        is raised. With ``connection`` the append joins the caller's transaction
        and must be its first write.
        """
        if not events:
            return []
        if connection is None:
            async with self.transaction() as own:
                return await self._append(own, events)
        return await self._append(connection, events)

    async def _append(self, connection: Connection, events: Sequence[StoredEvent]) -> list[int]:
        try:
            rows = await connection.fetch(
                _APPEND,
                [e.originator_id for e in events],
                [e.originator_version for e in events],
                [e.topic for e in events],
                [e.state for e in events],
            )
        except asyncpg.UniqueViolationError as error:
            raise ConcurrencyConflict(str(error)) from error
        except BaseException:
            # append_events() holds a session-level lock while it inserts; if it
            # failed in between, release it now rather than when the pool resets.
            with contextlib.suppress(Exception):
                await connection.execute("SELECT pg_advisory_unlock_all()")
            raise
        return [row[0] for row in rows]

    async def load(
        self,
        originator_id: UUID,
        *,
        after_version: int = 0,
        recorded_until: datetime | None = None,
    ) -> list[RecordedEvent]:
        """One aggregate's events in version order, optionally only up to a moment."""
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                f"""SELECT {_COLUMNS} FROM stored_events
                    WHERE originator_id = $1 AND originator_version > $2
                      AND ($3::timestamptz IS NULL OR recorded_at <= $3)
                    ORDER BY originator_version""",
                originator_id,
                after_version,
                recorded_until,
            )
        return [_recorded(row) for row in rows]

    async def load_page(
        self, originator_id: UUID, *, after: int, limit: int
    ) -> list[RecordedEvent]:
        """A page of one stream's events after position ``after``, oldest first.

        Within a stream, position order is version order and has no late commits:
        version n+1 can only be appended once version n is committed.
        """
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                f"""SELECT {_COLUMNS} FROM stored_events
                    WHERE originator_id = $1 AND notification_id > $2
                    ORDER BY originator_version LIMIT $3""",
                originator_id,
                after,
                limit,
            )
        return [_recorded(row) for row in rows]

    async def exists(self, originator_id: UUID) -> bool:
        """Whether an aggregate with this id has been created."""
        async with self.pool.acquire() as connection:
            found = await connection.fetchval(
                "SELECT 1 FROM stored_events WHERE originator_id = $1 AND originator_version = 1",
                originator_id,
            )
        return found is not None

    async def read_all(
        self, after: int = 0, limit: int = 1000, connection: Connection | None = None
    ) -> list[RecordedEvent]:
        """Events in commit order after position ``after``, never skipping a late commit."""
        if connection is None:
            async with self.pool.acquire() as own:
                return await self.read_all(after, limit, own)
        rows = await connection.fetch(
            f"""SELECT {_COLUMNS} FROM stored_events
                WHERE notification_id > $1 AND {_VISIBLE}
                ORDER BY notification_id LIMIT $2""",
            after,
            limit,
        )
        return [_recorded(row) for row in rows]

    async def head_position(self) -> int:
        """The highest position recorded so far (a bound for progress bars, not a cursor)."""
        async with self.pool.acquire() as connection:
            found = await connection.fetchval("SELECT max(notification_id) FROM stored_events")
        return int(found or 0)

    async def creation_field(self, topic: str, field: str) -> list[str]:
        """One field of every aggregate created by an event of ``topic``, oldest first."""
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                """SELECT convert_from(state, 'UTF8')::jsonb ->> $2 FROM stored_events
                   WHERE topic = $1 AND originator_version = 1
                   ORDER BY notification_id""",
                topic,
                field,
            )
        return [row[0] for row in rows]

    async def load_from_snapshot(
        self, originator_id: UUID, *, recorded_until: datetime | None = None
    ) -> tuple[RecordedEvent | None, list[RecordedEvent]]:
        """The newest snapshot that fits and the events after it, in one round trip."""
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                f"""WITH snapshot AS (
                        SELECT originator_id, originator_version, topic, state,
                               0::bigint AS notification_id, event_recorded_at AS recorded_at,
                               ''::bytea AS hash
                        FROM snapshots
                        WHERE originator_id = $1
                          AND ($2::timestamptz IS NULL OR event_recorded_at <= $2)
                        ORDER BY originator_version DESC LIMIT 1)
                    SELECT true, * FROM snapshot
                    UNION ALL
                    (SELECT false, {_COLUMNS} FROM stored_events
                     WHERE originator_id = $1
                       AND originator_version > coalesce(
                           (SELECT originator_version FROM snapshot), 0)
                       AND ($2::timestamptz IS NULL OR recorded_at <= $2)
                     ORDER BY originator_version)""",
                originator_id,
                recorded_until,
            )
        snapshot = None
        if rows and rows[0][0]:
            snapshot, rows = _recorded(rows[0][1:]), rows[1:]
        return snapshot, [_recorded(row[1:]) for row in rows]

    @staticmethod
    async def save_snapshot(connection: Connection, snapshot: StoredEvent) -> None:
        """Keep a snapshot, in the transaction that appended its aggregate's events.

        Its time is taken after those events', so an as-of replay never starts from
        a snapshot that includes an event recorded after the moment asked for.
        """
        await connection.execute(
            """INSERT INTO snapshots (originator_id, originator_version, topic, state,
                                      event_recorded_at)
               VALUES ($1, $2, $3, $4, clock_timestamp())
               ON CONFLICT DO NOTHING""",
            snapshot.originator_id,
            snapshot.originator_version,
            snapshot.topic,
            snapshot.state,
        )
