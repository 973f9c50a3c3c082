"""The append-only event store on PostgreSQL, through asyncpg: reading it.

Writes go through the SQL function ``append()`` (``sql/functions/20_append.sql``), or for
a lone command of one event ``append_one()`` (``21_append_one.sql``), both called by
``ledger/store/commit.py``.

Ordering: readers tail the table by ``notification_id`` and must never pass
over an event that commits after a later-numbered one. The eventsourcing
library gets that by taking ``LOCK TABLE ... IN EXCLUSIVE MODE`` until commit,
so writers commit one at a time. We use a transaction-id watermark instead:

* ``append()`` (and ``append_one()``) hands out a transaction id, a block of notification ids and the
  time recorded under an advisory lock held for that alone, so notification
  order equals transaction-id order (and ``recorded_at`` order) while the rest,
  the inserts with their checks and the commit with its fsync, runs in parallel.
* Readers only return rows whose writing transaction is older than the oldest
  transaction still running in this database (``WATERMARK``). A row with a lower
  notification id than one returned belongs to an older transaction, which has
  therefore ended: it is visible already or it never will be.

``bench/append_rate.py`` measures both designs against plain inserts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy
from eventsourcing.persistence import StoredEvent

from ledger.store.hash_chain import postgres_moment
from ledger.store.read_connections import Pool
from ledger.store.shared_reads import SharedReads

Connection = asyncpg.Connection | PoolConnectionProxy
"""A connection of our own or one lent by the pool: both take the same calls."""

DATABASE_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
"""What asyncpg raises while PostgreSQL is away, restarting or refusing a statement: a loop
in the background says so in one line and tries again. ``InternalClientError`` ("cannot
switch to state …") is a pooled connection the server cut off mid-operation, failing its
next use: seen while PostgreSQL restarted."""

NOTIFY_CHANNEL = "ledger_events"

WATERMARK = """(SELECT CASE WHEN pg_is_in_recovery() THEN pg_snapshot_xmin(snapshot) ELSE coalesce(
        (SELECT min(running) FROM pg_snapshot_xip(snapshot) AS running
         WHERE xid(running) NOT IN (
             SELECT backend_xid
             FROM pg_stat_get_activity(nullif(pg_stat_clear_snapshot()::text, '')::int)
             WHERE backend_xid IS NOT NULL
               AND datid <> (SELECT oid FROM pg_database WHERE datname = current_database()))),
        pg_snapshot_xmax(snapshot)) END
    FROM pg_current_snapshot() AS snapshot)"""
"""The ordering watermark: the oldest transaction running in this database as this
statement's snapshot saw it (or, with none, the first the snapshot does not see). Not
``pg_snapshot_xmin``, the oldest in the whole cluster: a write transaction left open in
another database held every view and every as-of answer for as long as it ran. A running
transaction only leaves the count once it is seen in another database; one that ended
since the snapshot still counts (its rows are not in the snapshot), until the next look.

The sessions are read after the snapshot, afresh (``pg_stat_clear_snapshot()``, as the
argument is evaluated first): PostgreSQL keeps the first read for the rest of the
transaction, and a session of this database that began since (in a slot another
database's session had left) could pass for the other database's in a later statement.
A standby's snapshot lists no running transaction (they are all in its sub-transaction
list, which ``pg_current_snapshot()`` leaves out) and shows only its own sessions: there,
``pg_snapshot_xmin`` as before."""

VISIBLE = f"transaction_id < {WATERMARK}"
"""The condition on ``stored_events`` rows a reader in commit order may pass: every
transaction of this database that began before theirs has ended."""

_COLUMNS = "originator_id, originator_version, topic, state, notification_id, recorded_at, hash"


ORDERING_LOCK = 748200101
"""The advisory lock under which append() and append_one() hand out positions (see
sql/functions/20_append.sql)."""


_NEWER_THAN_EVERY_APPEND = "SELECT transaction_id, at FROM newer_than_every_append()"
"""The owner's function takes the ordering lock, reads both and lets go of it before it returns
(sql/functions/20_newer_than_every_append.sql): no login role may take an advisory lock
itself (sql/advisory_locks.sql), and none can leave this one held in a transaction."""


class StoreBusy(Exception):
    """The store could not answer in time (an as-of moment still being written): retry."""


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


class ReplayedEvent(msgspec.Struct, frozen=True, gc=False):
    """A stored event as a replay of the whole store reads it (an audit's
    ``events_of_part``, a rebuild's ``replay_whole_appends_after`` and ``read_part_until``):
    its time as PostgreSQL keeps it, microseconds since 2000, which the hash chain hashes,
    order checks compare and a rebuild writes into its views; a datetime only where one is
    asked for. asyncpg's datetime, and ``postgres_microseconds`` back from it, cost a replay
    ~1 µs an event: ~10 % of an audit.

    Not tracked by the garbage collector (``gc=False``): it refers to its id and values and
    nothing refers back; tracked (asyncpg's UUID is), each cost a rebuild ~130 instructions
    and an audit ~150, in the collector's lists and its young collections."""

    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes
    notification_id: int
    microseconds: int

    @property
    def recorded_at(self) -> datetime:
        return postgres_moment(self.microseconds)


class ChainedEvent(ReplayedEvent, frozen=True):
    """A replayed event with its stored hash, which an audit checks the chain by: a rebuild
    reads none (32 bytes decoded and freed an event, ~400 instructions of its ~44,000)."""

    hash: bytes


_Loaded = tuple[RecordedEvent | None, list[RecordedEvent]]
"""A stream's newest snapshot (if any) and its events after it."""


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


async def read_after(connection: Connection, after: int, limit: int) -> list[RecordedEvent]:
    """Events in commit order after position ``after``, never skipping a late commit."""
    return [_recorded(row) for row in await connection.fetch(_read_after(_COLUMNS), after, limit)]


async def replay_after(connection: Connection, after: int, limit: int) -> list[ReplayedEvent]:
    """``read_after``'s events with their times as PostgreSQL keeps them (``ReplayedEvent``;
    ``connection`` reads a ``timestamptz`` so: see ``EVENT_COLUMNS``)."""
    rows = await connection.fetch(_read_after(EVENT_COLUMNS), after, limit)
    return [ReplayedEvent(*row[WHOLE_ROW]) for row in rows]


def _read_after(columns: str) -> str:
    return f"""SELECT {columns} FROM stored_events
        WHERE notification_id > $1 AND {VISIBLE}
        ORDER BY notification_id LIMIT $2"""


_APPEND_TAIL = 64
"""Events read past a batch's limit to find where the last append's events end."""

_Event = TypeVar("_Event", RecordedEvent, ReplayedEvent)


def same_append(event: _Event, before: _Event) -> bool:
    """Whether ``event`` was recorded by the same append as ``before``, the event read just
    before it, in a read of the whole store or of some of its streams (a rebuild's part).

    One append takes its time once and its positions one after another under the
    ordering lock: its events share ``recorded_at`` and, in the whole store, follow one
    another; in a part, which skips the other streams' events, the same stream at the
    same moment is the same append's. A cut made where this is False never ends inside
    an append."""
    return event.recorded_at == before.recorded_at and (
        event.notification_id == before.notification_id + 1
        or event.originator_id == before.originator_id
    )


async def read_whole_appends_after(
    connection: Connection, after: int, limit: int
) -> list[RecordedEvent]:
    """As ``read_after``, but never ending inside one append's events: a batch that
    reaches ``limit`` goes on to the last event of the append it is in.

    Readers that apply whole batches (the projector) then never show half a command:
    a refund that claws back and restores, or a spend with its notification, moves a
    view from one state a command left to the next, never through what lies between.
    """
    return await _whole_appends_after(read_after, connection, after, limit)


async def replay_whole_appends_after(
    connection: Connection, after: int, limit: int
) -> list[ReplayedEvent]:
    """``read_whole_appends_after``'s events with their times as PostgreSQL keeps them: a
    rebuild's (``projections/rebuild.py``), which makes no datetime of them."""
    return await _whole_appends_after(replay_after, connection, after, limit)


async def _whole_appends_after(
    read: Callable[[Connection, int, int], Awaitable[list[_Event]]],
    connection: Connection,
    after: int,
    limit: int,
) -> list[_Event]:
    events = await read(connection, after, limit + _APPEND_TAIL)
    if len(events) <= limit:
        return events
    kept, tail = events[:limit], events[limit:]
    while True:
        for event in tail:  # a few events a batch: a ReplayedEvent's datetime is made here
            if not same_append(event, kept[-1]):
                return kept
            kept.append(event)
        if len(tail) < _APPEND_TAIL:
            return kept
        tail = await read(connection, kept[-1].notification_id, _APPEND_TAIL)


def _up_to_first_gap(version: int, events: list[RecordedEvent]) -> list[RecordedEvent]:
    """The events that follow ``version`` one by one. Appends record their time in order,
    so the events recorded up to a moment are a stream's first ones; an event recorded
    into the past (a store changed by hand, which the audit reports) ends them there."""
    for index, event in enumerate(events):
        if event.originator_version != version + index + 1:
            return events[:index]
    return events


async def visible_head(connection: Connection) -> int:
    """The last position a reader may pass now: every event up to it has committed or never will.

    In a REPEATABLE READ transaction, the events up to it are exactly those this
    snapshot sees, and it is the last event of a whole append.
    """
    found = await connection.fetchval(
        f"SELECT max(notification_id) FROM stored_events WHERE {VISIBLE}"
    )
    return int(found or 0)


async def read_part_until(
    connection: Connection, until: int, part: int, parts: int, chunk: int = 5000
) -> AsyncIterator[list[ReplayedEvent]]:
    """In commit order and in lists of ``chunk``, the events up to ``until`` of the streams in
    ``part`` of ``parts``, with their times as PostgreSQL keeps them (``ReplayedEvent``).

    Streams are dealt to parts by a hash of their id, so each stream's events are
    all in one part. Needs a transaction (a cursor), ``until`` no later than
    ``visible_head`` in it, and ``connection`` reading a ``timestamptz`` as its
    microseconds (``EVENT_COLUMNS``).
    """
    cursor = await connection.cursor(
        events_of_part(part, parts, "notification_id <= $1", EVENT_COLUMNS), until
    )
    while rows := await cursor.fetch(chunk):
        yield [ReplayedEvent(*row[WHOLE_ROW]) for row in rows]


def stream_part(part: int, parts: int) -> str:
    """SQL that holds for the rows (events, snapshots) of the streams in ``part`` of
    ``parts``, dealt by a hash of the stream id (the id as it is: no text made of it)."""
    return f"(uuid_hash(originator_id) & 2147483647) % {int(parts)} = {int(part)}"


EVENT_COLUMNS = _COLUMNS.removesuffix(", hash")
"""The columns of a ``ReplayedEvent`` in its fields' order, for a connection that reads a
``timestamptz`` as its microseconds (``projections.events.times_as_microseconds``: every
replay's, the rebuild's and the audit's): a row is then the event's fields as they are
(``ReplayedEvent(*row[WHOLE_ROW])``)."""
CHAINED_COLUMNS = f"{EVENT_COLUMNS}, hash"
"""The columns of a ``ChainedEvent``, read as ``EVENT_COLUMNS`` are."""

WHOLE_ROW = slice(None)
"""``row[WHOLE_ROW]``: a row's values as a tuple, which asyncpg's Record copies in one loop
of its own; ``ReplayedEvent(*row)`` made that tuple through the Record's iterator, ~330
instructions an event more in the rebuild (bench.rebuild_instructions) and ~460 in an audit
(audit/parts.py, bench.verify_instructions)."""


def events_of_part(part: int, parts: int, bound: str = "true", columns: str = _COLUMNS) -> str:
    """The query of the events of ``stream_part(part, parts)`` that ``bound`` admits, in
    commit order: down the notification_id index, each row kept or passed over as it comes.

    Asked for directly, PostgreSQL takes the part's filter to keep 0.5 % of the rows and
    sorts what a scan of the whole table keeps instead (half of it for two parts, on disk,
    before the first row goes out: ~1.7x the server time on 1,000,000 events). The
    subquery's OFFSET 0 has the rows' order planned without the filter. ``columns`` are made
    outside it, of the rows kept only: the scan hands on its rows as they are (an audit's
    column of hidden events made for half the rows of two parts cost each part's read ~8 %
    more of PostgreSQL's CPU, 0.45 -> 0.41 s of 1,000,000 events).
    """
    return f"""SELECT {columns} FROM (
            SELECT * FROM stored_events WHERE {bound}
            ORDER BY notification_id OFFSET 0) AS e
        WHERE {stream_part(part, parts)} ORDER BY notification_id"""


LOAD_MANY = "SELECT * FROM load_streams($1::uuid[])"
"""Each stream's newest snapshot and the events after it, read down the streams' indexes
from where they start, on one plan kept per session (``sql/functions/20_load_streams.sql``:
planned as a statement it was planned again on every call, dearer than running it)."""

LOAD_ONE = "SELECT * FROM load_streams(ARRAY[$1::uuid])"
"""``LOAD_MANY`` of one stream, its array made by PostgreSQL: asyncpg checks an array
parameter and each of its elements in Python (``isinstance`` against ``collections.abc``),
which cost a paid Stripe delivery, whose session alone is loaded, 9k instructions
(callgrind, bench/spend_instructions.py --webhook)."""

LOADS_KEEP_IDLE = 0.1
"""How long the task that loads streams for commands keeps its connection after its last
load (ledger/store/shared_reads.py), as a group-commit writer keeps its own (``KEEP_IDLE``,
ledger/store/commit.py). A connection taken from the pool and given back around each load,
and a task started for each, cost a paid Stripe delivery (its session is loaded from the
store) 113k of its 1,122k in-process instructions (callgrind, bench/spend_instructions.py
--webhook). One connection at most: one such task runs at a time, within the connections
the API keeps for commands' loads (``api.database.LOADS_KEPT_FOR_COMMANDS``)."""

# An account's streams are those whose first event names it (stored_events_account_streams_idx).
ACCOUNT_PAGE = f"""SELECT {_COLUMNS} FROM stored_events
    WHERE originator_id IN (
        SELECT originator_id FROM stored_events
        WHERE event_account_id(state) = $1 AND originator_version = 1)
      AND notification_id > $2 AND {VISIBLE}
    ORDER BY notification_id LIMIT $3"""


class EventStore:
    """Appends events with optimistic concurrency and reads them back in order."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.shared_loads: SharedReads[UUID, _Loaded] = SharedReads(
            _load_many_on, pool, keep_idle=LOADS_KEEP_IDLE
        )

    async def append(self, events: Sequence[StoredEvent]) -> list[int]:
        """Append events as one command, at once (tests and data generators; commands
        go through the group committer). Raises ConcurrencyConflict."""
        from ledger.store.commit import Writes, write_batch

        async with self.pool.acquire() as connection:
            [outcome] = await write_batch(connection, [Writes(events=events)])
        return outcome.result()

    async def load(
        self,
        originator_id: UUID,
        *,
        after_version: int = 0,
        recorded_until: datetime | None = None,
    ) -> list[RecordedEvent]:
        """One aggregate's events in version order, optionally only up to a moment.

        The version is compared with ``(SELECT $2)``, a value the planner cannot see:
        compared with $2, PostgreSQL planned the statement again on every call once the
        store was large (a cached account's newest version lies past most of the column's
        histogram, so each custom plan looked cheaper than the generic one): a round trip
        of 184-230 us so, 136-183 us on the one plan it keeps now (1,000,000 events, one
        connection, interleaved). The plan is the same for every version: the stream's
        key range in the primary key.
        """
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                f"""SELECT {_COLUMNS} FROM stored_events
                    WHERE originator_id = $1 AND originator_version > (SELECT $2::bigint)
                      AND ($3::timestamptz IS NULL OR recorded_at <= $3)
                    ORDER BY originator_version""",
                originator_id,
                after_version,
                recorded_until,
            )
        return [_recorded(row) for row in rows]

    async def account_page(self, account_id: str, *, after: int, limit: int) -> list[RecordedEvent]:
        """The events of an account's stream and its Checkout sessions', in commit order.

        Several streams interleave, so this reads behind the watermark as read_all does.
        """
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(ACCOUNT_PAGE, account_id, after, limit)
        return [_recorded(row) for row in rows]

    async def wait_for_appends_before(self, moment: datetime, seconds: float = 2.0) -> None:
        """Return once no append that could be recorded at or before ``moment`` is still running.

        An append takes its time and its transaction id under the ordering lock. With
        that lock held here, a transaction id taken now is newer than every append
        that took its time before now; once the watermark (``WATERMARK``, the oldest
        transaction running in this database) has passed it, all those appends have
        ended, and an as-of answer is final. Raises StoreBusy after ``seconds``.

        "Now" is the database's clock, which records the appends: a moment the caller's
        clock has passed may be still to come on it (clocks apart), and is waited for.
        """
        deadline = time.monotonic() + seconds
        while True:
            # Shielded, and the lock let go of inside the function, on every path: a question
            # given up on (a client gone, a timeout) left the session's lock on a pooled
            # connection, and every append waited.
            newer_than_all, now = await asyncio.shield(
                self._transaction_id_newer_than_every_append()
            )
            if now > moment:
                break
            ahead = (moment - now).total_seconds()
            if time.monotonic() + ahead > deadline:
                raise StoreBusy("that moment has not come yet on the database's clock")
            await asyncio.sleep(ahead + 0.000_001)
        # Each look takes a connection for itself, less and less often: a wait held one
        # for its 2 s and looked every 2 ms, so a long transaction in the database (which
        # holds the watermark back) made every as-of question hold a connection and query
        # it some 300 times a second, and twenty of them took the whole pool.
        pause = 0.002
        while True:
            if not await self.pool.fetchval(f"SELECT {WATERMARK} < $1::xid8", newer_than_all):
                return
            if time.monotonic() > deadline:
                raise StoreBusy("appends recorded before that moment are still committing")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def _transaction_id_newer_than_every_append(self) -> tuple[int, datetime]:
        """A transaction id newer than every append that took its time, and the database's
        time then: every append after it records a later time."""
        # One statement, its own transaction: the server takes the lock, asks and lets it go.
        # In a transaction of three, the lock was held over two round trips to this process,
        # and every append in the cluster waited for them.
        async with self.pool.acquire() as connection:
            row = await connection.fetchrow(_NEWER_THAN_EVERY_APPEND)
            assert row is not None  # one row: the function's
            return row[0], row[1]

    async def first_events(self, originator_ids: Iterable[UUID]) -> list[RecordedEvent]:
        """The first event of each of these streams (what created it)."""
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                f"""SELECT {_COLUMNS} FROM stored_events
                    WHERE originator_id = any($1::uuid[]) AND originator_version = 1""",
                list(originator_ids),
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
                return await read_after(own, after, limit)
        return await read_after(connection, after, limit)

    async def event_at(
        self, position: int, connection: Connection | None = None
    ) -> RecordedEvent | None:
        """The committed event at ``position``, if there is one; not behind the watermark.

        For a position a reader passed before (a relay's last published event): a later
        look's watermark can stand below it for a moment (a transaction of another database
        that ends between that look's snapshot and its read of the sessions counts there),
        and ``read_all`` then finds nothing there."""
        query = f"SELECT {_COLUMNS} FROM stored_events WHERE notification_id = $1"
        if connection is None:
            async with self.pool.acquire() as own:
                row = await own.fetchrow(query, position)
        else:
            row = await connection.fetchrow(query, position)
        return None if row is None else _recorded(row)

    async def last_position(self, originator_id: UUID) -> int:
        """The position of a stream's last event (0: it has none)."""
        async with self.pool.acquire() as connection:
            found = await connection.fetchval(
                """SELECT notification_id FROM stored_events WHERE originator_id = $1
                   ORDER BY originator_version DESC LIMIT 1""",
                originator_id,
            )
        return int(found or 0)

    async def head_position(self) -> int:
        """The highest position recorded so far (a bound for progress bars, not a cursor)."""
        async with self.pool.acquire() as connection:
            found = await connection.fetchval("SELECT max(notification_id) FROM stored_events")
        return int(found or 0)

    async def creation_field(self, topics: Sequence[str], field: str) -> list[str]:
        """One field of every aggregate created by an event of ``topics``, oldest first."""
        async with self.pool.acquire() as connection:
            rows = await connection.fetch(
                """SELECT convert_from(state, 'UTF8')::jsonb ->> $2 FROM stored_events
                   WHERE topic = any($1::text[]) AND originator_version = 1
                   ORDER BY notification_id""",
                list(topics),
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
        events = [_recorded(row[1:]) for row in rows]
        if recorded_until is not None:
            events = _up_to_first_gap(snapshot.originator_version if snapshot else 0, events)
        return snapshot, events

    def load_many_from_snapshots(
        self, originator_ids: Sequence[UUID]
    ) -> Awaitable[list[_Loaded | None]]:
        """``load_from_snapshot`` of several streams in one round trip, in the order asked
        (None for a stream with no events); loads asked for at the same moment share that
        round trip (ledger/store/shared_reads.py). A list, not a dict by stream id: a
        ``UUID``'s hash is a Python method (~900 instructions, callgrind). Awaited as the
        shared reads' own (a coroutine around it cost a load ~700 instructions)."""
        return self.shared_loads.read_many(originator_ids)


async def _load_many_on(
    connection: Connection, originator_ids: Sequence[UUID]
) -> dict[UUID, _Loaded]:
    if len(originator_ids) == 1:  # nearly every load: a lone command's streams not in memory
        rows = await connection.fetch(LOAD_ONE, originator_ids[0])
    else:
        rows = await connection.fetch(LOAD_MANY, list(originator_ids))
    loaded: dict[UUID, _Loaded] = {}
    for row in rows:
        recorded = _recorded(row[1:])
        _, events = loaded.setdefault(recorded.originator_id, (None, []))
        if row[0]:
            loaded[recorded.originator_id] = (recorded, events)
        else:
            events.append(recorded)
    return loaded
