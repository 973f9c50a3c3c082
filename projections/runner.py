"""The projector: tails the store in commit order and keeps every view up to date.

Each batch is one transaction holding the views' rows and their new positions: a
projector killed mid-batch leaves nothing half-applied, and two projectors never apply
the same batch twice. Once a projector knows where it left the views, a batch is one
statement that moves their positions only if their rows are still as it left them
(``_apply_as_left``); when it does not know, or they are not, it locks the position rows
(``FOR UPDATE``) in a transaction and learns (``_apply_locked``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg

from ledger.failing_loop import FailingLoop
from ledger.store.event_store import (
    DATABASE_ERRORS,
    NOTIFY_CHANNEL,
    VISIBLE,
    Connection,
    EventStore,
    RecordedEvent,
    read_whole_appends_after,
)
from ledger.store.wakeups import Listening, wait_for_either
from projections.balances import BalancesProjection
from projections.events import ProjectedEvent, UnreadableEvent, projected
from projections.grants import GrantsProjection
from projections.holds import HoldsProjection
from projections.memory import ViewMemory
from projections.notifications import NotificationsProjection
from projections.purchases import PurchasesProjection
from projections.statement import StatementProjection
from projections.writes import Write, together, write_each

log = logging.getLogger(__name__)

BATCH_SIZE = 500
# Without a notification (or while an old transaction holds the watermark back)
# the projector still looks this often.
POLL_SECONDS = 0.5
STUCK_RETRY_SECONDS = 30.0
"""How often a projector stopped by an event it cannot read tries it again."""


class Projection(Protocol):
    """A view: a name for its position, a table, and how each event changes it.

    Each of its rows is folded from the events of one stream only (an account's, or a
    Checkout session's): a rebuild deals the streams out to several processes
    (projections/rebuild_parts.py), each of which sees only its own streams' events.

    A view that reads its rows back before writing them may also have a ``memory``
    (``projections/memory.py``), which ``apply_batch`` forgets whenever it cannot vouch
    for it.
    """

    name: str
    table: str

    async def fold(
        self, connection: Connection, table: str, events: Sequence[ProjectedEvent]
    ) -> list[Write]:
        """The writes that fold a batch of events, in commit order, into ``table``: the
        live projector sends them with the other views' (``projections/writes.py``)."""

    async def apply(
        self, connection: Connection, table: str, events: Sequence[ProjectedEvent]
    ) -> None:
        """Fold a batch of events, in commit order, into ``table`` (a rebuild's)."""


def all_projections(*, remembering: bool = False) -> list[Projection]:
    """Every view the service serves, in the order they are applied.

    ``remembering``: the views that read their rows back before they write them keep them
    in memory between batches (``projections/memory.py``), for the live projector.
    """

    def memory() -> ViewMemory[Any]:
        return ViewMemory() if remembering else ViewMemory(limit=0)

    return [
        BalancesProjection(memory()),
        PurchasesProjection(memory()),
        StatementProjection(memory()),
        HoldsProjection(),
        GrantsProjection(),
        NotificationsProjection(memory()),
    ]


def _memory_of(projection: Projection) -> ViewMemory[Any] | None:
    return getattr(projection, "memory", None)


# Whether any view has an event to apply, in one round trip: finding out inside
# apply_batch's transaction took six, and under load half the projector's looks find
# nothing (a NOTIFY wakes it for events its last batch already applied). The positions
# are read once and the store probed from their lowest (LATERAL): as three subqueries,
# two of them over the positions, a look cost its backend 33-63 µs, against 30-37. Not EXISTS:
# PostgreSQL drops an EXISTS subquery's ORDER BY and LIMIT, then reads the whole table
# for a position it cannot estimate.
_ANYTHING_TO_APPLY = f"""
    SELECT p.views < cardinality($1::text[]) OR e.notification_id IS NOT NULL
    FROM (SELECT count(*) AS views, min(position) AS lowest FROM projection_positions
          WHERE name = any($1::text[])) AS p
    LEFT JOIN LATERAL (
        SELECT notification_id FROM stored_events
        WHERE notification_id > p.lowest AND {VISIBLE}
        ORDER BY notification_id LIMIT 1) AS e ON true"""


# The views' position rows, locked in name order, and this transaction's commit told not
# to wait for its WAL flush (``apply_batch``): one round trip, where a SET LOCAL of its
# own took another.
_LOCK_POSITIONS = """
    SELECT name, position, xmin FROM projection_positions,
        set_config('synchronous_commit', 'off', true)
    WHERE name = any($1) ORDER BY name FOR UPDATE OF projection_positions"""


async def apply_batch(
    store: EventStore, projections: Sequence[Projection], batch_size: int = BATCH_SIZE
) -> dict[str, int]:
    """Apply the next batch to each view, all in one transaction with their new positions.

    The views' position rows are locked first (in name order, so two projectors
    queue instead of deadlocking). Views at the same position share one read of
    the events and one decode: normally all of them are. Returns the events
    applied per view. When no view has anything to apply (``_ANYTHING_TO_APPLY``), no
    transaction is opened and no position locked.

    The batch commits without waiting for its WAL flush (``synchronous_commit``
    off for this transaction only): views are derived, and a crash can lose only
    the last batches whole, their positions with them, which are then applied
    again. Every answer to a command still waits for its flush.
    """
    async with store.pool.acquire() as connection:
        return await _apply_batch_on(connection, projections, batch_size, {})


async def _apply_batch_on(
    connection: Connection,
    projections: Sequence[Projection],
    batch_size: int,
    left_at: dict[str, tuple[int, int]],
) -> dict[str, int]:
    """``apply_batch`` on a connection the caller holds.

    ``left_at``: each view's position and its position row's ``xmin`` as this projector
    last wrote them, kept up to date here. When it left every view at one position, the
    batch takes the short road (``_apply_as_left``): the read of the events after that
    position is also its look, and the batch writes in one statement, its own
    transaction, which waits for no position row. Otherwise, or when a view is no longer
    as it was left, it looks (``_ANYTHING_TO_APPLY``), then applies the batch in a
    transaction with the position rows locked, and learns where the views are.
    """
    names = sorted(p.name for p in projections)
    if (start := _one_position(left_at, names)) is not None:
        events = await read_whole_appends_after(connection, start, batch_size)
        if not events:
            return dict.fromkeys(names, 0)
        try:
            return await _apply_as_left(connection, projections, names, events, left_at)
        except PositionsMoved:
            pass  # another writer moved a view: the locked road finds where it is now
    if not await connection.fetchval(_ANYTHING_TO_APPLY, names):
        return dict.fromkeys(names, 0)
    try:
        async with connection.transaction():
            applied, as_found, written_at = await _apply_locked(
                connection, projections, names, batch_size
            )
    except BaseException:
        _forget(projections, left_at)
        raise
    _remember(projections, left_at, as_found | written_at, written_at)
    return applied


def _one_position(left_at: dict[str, tuple[int, int]], names: list[str]) -> int | None:
    """The position every view was left at, if this projector left them all at one."""
    if not all(name in left_at for name in names):
        return None
    positions = {left_at[name][0] for name in names}
    return positions.pop() if len(positions) == 1 else None


def _forget(projections: Sequence[Projection], left_at: dict[str, tuple[int, int]]) -> None:
    """After a batch that failed: the rows in memory may have been folded past what
    committed, and where the views are is not known."""
    for projection in projections:
        if memory := _memory_of(projection):
            memory.forget()
    left_at.clear()


def _remember(
    projections: Sequence[Projection],
    left_at: dict[str, tuple[int, int]],
    now_at: dict[str, tuple[int, int]],
    written_at: dict[str, tuple[int, int]],
) -> None:
    for projection in projections:
        if (memory := _memory_of(projection)) and projection.name in written_at:
            memory.written_at = written_at[projection.name]
    left_at.update(now_at)


class PositionsMoved(Exception):
    """A view's position row was not as this projector left it (``LP001``)."""


async def _apply_as_left(
    connection: Connection,
    projections: Sequence[Projection],
    names: list[str],
    events: list[RecordedEvent],
    left_at: dict[str, tuple[int, int]],
) -> dict[str, int]:
    """Apply ``events`` to every view, all left at the position they follow, in one
    statement that moves the positions only if their rows are as left
    (``move_projection_positions``); PositionsMoved, and nothing written, if one is not.

    The statement is a transaction of its own: the views' rows and their positions
    commit together or not at all, and no other statement of the batch is inside it (a
    view's fold reads only rows of its own, as the positions say they are). Its commit
    does not wait for its WAL flush, as the locked road's does not (``apply_batch``). What
    must run alone (a NOTIFY) runs once it has committed.
    """
    decoded = [projected(e) for e in events]
    writes: list[Write] = []
    try:
        for projection in projections:
            writes += await projection.fold(connection, projection.table, decoded)
        moving = Write(
            _MOVE_POSITIONS_AS_LEFT,
            (
                names,
                [left_at[name][0] for name in names],
                [left_at[name][1] for name in names],
                [decoded[-1].position] * len(names),
            ),
        )
        statement, after = together(writes, moving)
        try:
            moved = await connection.fetch(statement.sql, *statement.args)
        except asyncpg.PostgresError as error:
            if error.sqlstate == _POSITIONS_MOVED:
                raise PositionsMoved(str(error)) from None
            raise
    except BaseException:
        _forget(projections, left_at)
        raise
    written_at = _positions_of(moved)
    _remember(projections, left_at, written_at, written_at)
    await write_each(connection, after)
    return dict.fromkeys(names, len(decoded))


async def _apply_locked(
    connection: Connection,
    projections: Sequence[Projection],
    names: list[str],
    batch_size: int,
) -> tuple[dict[str, int], dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
    """The events applied per view, each view's position and its row's ``xmin`` as found,
    and as written by the views that moved."""
    rows = await connection.fetch(_LOCK_POSITIONS, names)
    if len(rows) < len(names):  # a view's first batch ever: its position row is made first
        await connection.execute(
            """INSERT INTO projection_positions (name) SELECT unnest($1::text[])
               ON CONFLICT DO NOTHING""",
            names,
        )
        rows = await connection.fetch(_LOCK_POSITIONS, names)
    as_found = _positions_of(rows)
    read_from = {name: position for name, (position, _) in as_found.items()}
    for projection in projections:
        # Someone else wrote the view since this projector last did: read it afresh.
        if (memory := _memory_of(projection)) and memory.written_at != as_found[projection.name]:
            memory.forget()
    applied: dict[str, int] = {}
    moved_to: dict[str, int] = {}
    writes: list[Write] = []
    for position in sorted(set(read_from.values())):
        events = await read_whole_appends_after(connection, position, batch_size)
        decoded = [projected(e) for e in events]
        for projection in projections:
            if read_from[projection.name] != position:
                continue
            applied[projection.name] = len(decoded)
            if decoded:
                writes += await projection.fold(connection, projection.table, decoded)
                moved_to[projection.name] = decoded[-1].position
    written_at: dict[str, tuple[int, int]] = {}
    if moved_to:
        # Every view's writes and their new positions: one statement.
        statement, after = together(
            writes, Write(_MOVE_POSITIONS, (list(moved_to), list(moved_to.values())))
        )
        moved = await connection.fetch(statement.sql, *statement.args)
        await write_each(connection, after)
        written_at = _positions_of(moved)
    return applied, as_found, written_at


def _positions_of(rows: Sequence[asyncpg.Record]) -> dict[str, tuple[int, int]]:
    """Each view's position and its position row's ``xmin``, from rows that name them."""
    return {row["name"]: (int(row["position"]), int(row["xmin"])) for row in rows}


_MOVE_POSITIONS = """UPDATE projection_positions AS p SET position = m.position, updated_at = now()
    FROM unnest($1::text[], $2::bigint[]) AS m(name, position)
    WHERE p.name = m.name RETURNING p.name, p.position, p.xmin"""

_POSITIONS = "SELECT name, position, xmin FROM projection_positions WHERE name = any($1::text[])"

_POSITIONS_MOVED = "LP001"
# The short road's positions; its commit not told to wait for the WAL flush (a
# set_config in the statement holds for the statement's own transaction).
_MOVE_POSITIONS_AS_LEFT = """SELECT view_name AS name, view_position AS position, row_xmin AS xmin
    FROM move_projection_positions($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]),
        set_config('synchronous_commit', 'off', true)"""


async def catch_up(
    store: EventStore,
    projections: Sequence[Projection],
    batch_size: int = BATCH_SIZE,
    left_at: dict[str, tuple[int, int]] | None = None,
) -> int:
    """Apply everything visible now to every projection; return how many events were applied.

    ``left_at``: where this projector left the views, kept between catch-ups (see
    ``_apply_batch_on``)."""
    total = 0
    behind = list(projections)
    left_at = {} if left_at is None else left_at
    # One connection for the whole catch-up: under load most looks find nothing, and a
    # pool checkout and return cost the projector about half what a look does (~19 µs
    # against ~35, each measured alone).
    async with store.pool.acquire() as connection:
        while behind:
            applied = await _apply_batch_on(connection, behind, batch_size, left_at)
            total += sum(applied.values())
            # A batch short of batch_size read everything visible then: no read to find
            # nothing after it (under load a third of the projector's batches were that).
            behind = [p for p in behind if applied.get(p.name, 0) >= batch_size]
    return total


class Projector:
    """Runs the projections until stopped: wakes on NOTIFY, polls as a fallback."""

    def __init__(
        self,
        store: EventStore,
        database_url: str,
        batch_size: int = BATCH_SIZE,
        stuck_retry_seconds: float = STUCK_RETRY_SECONDS,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.stuck_retry_seconds = stuck_retry_seconds
        self.database_url = database_url
        self.projections = list(all_projections(remembering=True))
        self._wake = asyncio.Event()
        self._failing = FailingLoop(log, "projector")
        self._left_at: dict[str, tuple[int, int]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Catch up, then follow new events until ``stop`` is set."""
        listening = Listening(
            self.database_url,
            NOTIFY_CHANNEL,
            self._wake,
            who="projector",
            poll_seconds=POLL_SECONDS,
        )
        await listening.keep()
        try:
            log.info("projector started: %s", ", ".join(p.name for p in self.projections))
            while not stop.is_set():
                self._wake.clear()
                try:
                    applied = await catch_up(
                        self.store, self.projections, self.batch_size, self._left_at
                    )
                except DATABASE_ERRORS as error:
                    # Said once, then now and then while it lasts: twice a second, it buried
                    # every other line of the log.
                    self._failing.failed(
                        logging.WARNING, f"projector could not apply a batch (will retry): {error}"
                    )
                    applied = 0
                except UnreadableEvent as error:
                    # Stays up (its dispatcher delivers what is queued) and says so in one
                    # line, as a failing batch is (once, every 10 minutes, when it ends): a
                    # restart would read the same event again.
                    self._failing.failed(
                        logging.ERROR,
                        f"projector stopped: {error}; the views stay before it"
                        f" (will retry every {self.stuck_retry_seconds:.0f} s)",
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.stuck_retry_seconds)
                    continue
                else:
                    self._failing.succeeded()
                if applied:
                    # At once, rather than at the next wake-up: what committed meanwhile
                    # (waiting for its NOTIFY instead put 3-5 ms on the lag's median).
                    log.debug("projected %d events", applied)
                    continue
                await listening.keep()  # again, if PostgreSQL cut its connection off
                await wait_for_either(self._wake, stop, seconds=POLL_SECONDS)
                if not self._wake.is_set() and not stop.is_set():
                    await self._look_at_positions()
        finally:
            await listening.close()

    async def _look_at_positions(self) -> None:
        """On a quiet store's poll: forget where the views were left if one is not as left
        (reset by hand), so the next batch finds where it is. The short road would see it
        only once an event came, and it reads no position until then."""
        if not self._left_at:
            return
        try:
            rows = await self.store.pool.fetch(_POSITIONS, list(self._left_at))
        except DATABASE_ERRORS:
            return  # the next catch-up says so
        if _positions_of(rows) != self._left_at:
            self._left_at.clear()
