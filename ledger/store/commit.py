"""Group commit: concurrent commands share one transaction, one round trip, one fsync.

Every write the ledger makes ends here: ``write_batch`` sends a batch of
commands to the SQL write function ``append()``
(``ledger/store/sql/functions/20_append.sql``), in an implicit transaction; a batch of
one command of one event (and at most one claim, no snapshot) goes to ``append_one()``,
the same protocol in the shape of one command (``21_append_one.sql``: cheaper to call).

Commands queue their writes; a few writer tasks each take whatever is queued
(up to ``MAX_BATCH``) and send it as one call. There is no fixed wait: while
one batch commits, the next one gathers, so batches grow with load and a lone
command goes at once. A command's future resolves only after its batch
committed, so an answer still means "durable"; each command succeeds or fails
on its own. A writer keeps its pool connection for ``KEEP_IDLE`` seconds after
a batch, and the writer idle the shortest time takes the next one (see
``KEEP_IDLE``).

After a batch commits, readers (projector, relay, dispatcher) are woken by one
``NOTIFY``, sent outside the appending transaction and at most once per
``WAKE_EVERY`` seconds: a NOTIFY inside it would make every commit in the
cluster wait for the one before (see ../shared/FACTS.md). The task that sends
it keeps its connection as a writer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Sequence

import asyncpg
import msgspec
from eventsourcing.persistence import StoredEvent

from ledger.store import stats
from ledger.store.claims import Claim, ClaimTaken
from ledger.store.event_store import (
    DATABASE_ERRORS,
    NOTIFY_CHANNEL,
    ConcurrencyConflict,
    Connection,
)
from ledger.store.kept_connections import resolve, usable

log = logging.getLogger(__name__)

# A batch that falls back to one command at a time makes each a subtransaction: stay
# under PostgreSQL's 64-entry subxid cache.
MAX_BATCH = 48
# Batches in flight at once. 8 against 4: spends +7-12 %, webhooks +5-15 % in three
# interleaved quick benches on two cores (bench/HISTORY.md); the pool has 20 connections.
WRITERS = 8
WAKE_EVERY = 0.002
KEEP_IDLE = 0.1
"""How long a writer keeps its pool connection after its last batch. Taken from the pool and
given back around every batch, it cost a lone spend 19 % of its instructions, and around
every NOTIFY 9 % more (callgrind: asyncpg gives a connection back in a task of its own,
which a batch's answers waited for). Kept, the writers' connections are the share of the
pool that reads never take (``api.database.kept_for_commands``), and the writer idle the
shortest time takes the next batch, so a lone command finds one with its connection. Kept
for a while only: a pool closes once every connection is back, also the pool of a
committer nobody stopped. The task that sends the NOTIFY keeps its connection as long."""

_APPEND = "SELECT command, outcome, positions FROM append($1, $2, $3)"
ROW_FIELDS = 9  # append_row's
ROWS_AS_PARAMETERS = 16
"""A batch of up to this many rows sends each field of each row as a parameter of its own
(``_append_of``); a longer one sends its rows as an array (``_APPEND``). A served process's
batches are a few commands; each statement size is prepared once on each connection, at
~1.3M instructions for 128 rows (1,155 parameters, a codec looked up for each), so sizes
stop at 16 (five statements of at most 147 parameters): a batch longer than that pays the
array's checks, a small share of its own cost."""
_NO_ROW = (None,) * ROW_FIELDS
_NOTIFY = f"NOTIFY {NOTIFY_CHANNEL}"
_APPEND_ONE = "SELECT outcome, given FROM append_one($1, $2, $3, $4, $5, $6, $7, $8)"


class ClaimRecord(msgspec.Struct, frozen=True):
    """A claim and the answer to keep under it."""

    claim: Claim
    answer: bytes


class Writes(msgspec.Struct, frozen=True):
    """One command's writes: its events, the claims it makes, snapshots."""

    events: Sequence[StoredEvent]
    claims: Sequence[ClaimRecord] = ()
    snapshots: Sequence[StoredEvent] = ()


class Outcome(msgspec.Struct, frozen=True):
    """What ``append()`` said of one command."""

    outcome: str
    positions: list[int]

    def result(self) -> list[int]:
        """The positions, or the command's own error."""
        if self.outcome == "ok":
            return self.positions
        if self.outcome == "conflict":
            raise ConcurrencyConflict("another writer got to one of these streams first")
        raise ClaimTaken("the claim is recorded already")


async def write_batch(connection: Connection, batch: Sequence[Writes]) -> list[Outcome]:
    """Commit a batch with one call of ``append()`` (or ``append_one()``, see the module);
    the outcome of each command, in order."""
    try:
        if len(batch) == 1 and _is_one(batch[0]):
            return [await _write_one(connection, batch[0])]
        fields, snapshot_rows = _rows(batch)
        count = len(fields) // ROW_FIELDS
        # None for no snapshots (nearly every batch): append() skips a NULL array as it
        # skips an empty one, and asyncpg's check of an array parameter, empty or not, cost
        # a paid Stripe delivery 11k instructions (callgrind, bench/spend_instructions.py).
        if count > ROWS_AS_PARAMETERS:
            rows = await connection.fetch(
                _APPEND, len(batch), _as_rows(fields), snapshot_rows or None
            )
        else:
            size = _padded(count)
            rows = await connection.fetch(
                _append_of(size),
                len(batch),
                count,
                snapshot_rows or None,
                *fields,
                *_NO_ROW * (size - count),
            )
    except BaseException:
        # append() and append_one() hold a session-level lock while they hand out
        # positions; their handler lets go of it on their own errors and on a cancel, but a
        # second interrupt landing in that handler before it does leaves it held. The
        # owner's function: the service's role may call no advisory lock function itself
        # (sql/advisory_locks.sql).
        with contextlib.suppress(Exception):
            await connection.execute("SELECT let_go_of_advisory_locks()")
        raise
    outcomes = [Outcome("conflict", [])] * len(batch)
    for row in rows:
        outcomes[row["command"] - 1] = Outcome(row["outcome"], list(row["positions"] or ()))
    return outcomes


def _is_one(writes: Writes) -> bool:
    return len(writes.events) == 1 and len(writes.claims) <= 1 and not writes.snapshots


async def _write_one(connection: Connection, writes: Writes) -> Outcome:
    (event,) = writes.events
    claim = writes.claims[0] if writes.claims else None
    row = await connection.fetchrow(
        _APPEND_ONE,
        event.originator_id,
        event.originator_version,
        event.topic,
        event.state,
        *(
            (claim.claim.scope, claim.claim.key, claim.claim.fingerprint, claim.answer)
            if claim
            else (None,) * 4
        ),
    )
    assert row is not None
    return Outcome(row["outcome"], [] if row["given"] is None else [row["given"]])


class GroupCommitter:
    """Commits writes in batches; start() before use, stop() at shutdown."""

    def __init__(self, pool: asyncpg.Pool, writers: int = WRITERS) -> None:
        self.pool = pool
        self.writers = writers
        self._queue: deque[tuple[Writes, asyncio.Future[list[int]]]] = deque()
        self._idle: list[asyncio.Future[bool]] = []  # idle writers' wake-ups, latest last
        self._notifier: list[asyncio.Future[bool]] = []  # the wake-ups' task's, when it waits
        self._unfinished = 0  # commands queued or in a batch
        self._finished = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._committed = False  # since the last NOTIFY
        self.batches = 0
        self.commands = 0

    def start(self) -> None:
        """Start the writer tasks and the wake-ups (in the running event loop)."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._write_batches()) for _ in range(self.writers)]
            self._tasks.append(asyncio.create_task(self._wake_readers()))

    async def stop(self) -> None:
        """Finish what is queued, then stop the writers."""
        while self._unfinished:
            await self._finished.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._committed:
            with contextlib.suppress(Exception):
                await self.pool.execute(_NOTIFY)

    def commit(self, writes: Writes) -> asyncio.Future[list[int]]:
        """Commit one command's writes: the future of its events' positions (queued at once,
        awaited by the caller: not a coroutine of its own, one fewer a command).

        Raises ConcurrencyConflict or ClaimTaken for this command alone.
        """
        self.start()
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._queue.append((writes, future))  # unbounded: never waits
        self._unfinished += 1
        self._finished.clear()
        _wake_one(self._idle)
        return future

    async def _write_batches(self) -> None:
        connection: asyncpg.pool.PoolConnectionProxy | None = None
        try:
            while True:
                if not self._queue and not await _woken(self._idle, keeping=connection is not None):
                    await self._give_back(connection)
                    connection = None
                    continue
                taken = self._take()
                # Not written: a command given up on before its batch began (a request cut
                # off by a forced stop, answered 503 "please retry": nothing was recorded).
                batch = [(writes, future) for writes, future in taken if not future.cancelled()]
                try:
                    if batch:
                        connection = await self._write(connection, batch)
                finally:
                    self._unfinished -= len(taken)
                    if not self._unfinished:
                        self._finished.set()
        finally:
            await self._give_back(connection)

    def _take(self) -> list[tuple[Writes, asyncio.Future[list[int]]]]:
        queue = self._queue
        if len(queue) <= MAX_BATCH:
            taken = list(queue)
            queue.clear()
            return taken
        return [queue.popleft() for _ in range(MAX_BATCH)]

    async def _give_back(self, connection: asyncpg.pool.PoolConnectionProxy | None) -> None:
        if connection is not None:
            with contextlib.suppress(Exception):
                await self.pool.release(connection)

    async def _usable(
        self, connection: asyncpg.pool.PoolConnectionProxy | None
    ) -> asyncpg.pool.PoolConnectionProxy:
        """``connection`` if it is usable (``kept_connections.usable``), else one from the
        pool."""
        if connection is not None and usable(connection):
            return connection
        await self._give_back(connection)
        return await self.pool.acquire()

    async def _write(
        self,
        connection: asyncpg.pool.PoolConnectionProxy | None,
        batch: list[tuple[Writes, asyncio.Future[list[int]]]],
    ) -> asyncpg.pool.PoolConnectionProxy | None:
        """Write ``batch`` on ``connection`` (or one from the pool); the connection, or None
        if it was given back (after an error: it may be broken)."""
        try:
            connection = await self._usable(connection)
            outcomes = await write_batch(connection, [writes for writes, _ in batch])
        except BaseException as error:
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            await self._give_back(connection)
            if isinstance(error, asyncio.CancelledError):
                raise
            return None
        self.batches += 1
        self.commands += len(batch)
        stats.group_commit_batches.inc()
        stats.group_commit_commands.inc(len(batch))
        self._committed = True
        _wake_one(self._notifier)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            try:
                future.set_result(outcome.result())
            except (ConcurrencyConflict, ClaimTaken) as refused:
                future.set_exception(refused)
        return connection

    async def _wake_readers(self) -> None:
        connection: asyncpg.pool.PoolConnectionProxy | None = None
        try:
            while True:
                if not self._committed and not await _woken(
                    self._notifier, keeping=connection is not None
                ):
                    await self._give_back(connection)
                    connection = None
                    continue
                self._committed = False
                try:
                    connection = await self._usable(connection)
                    await connection.execute(_NOTIFY)
                except DATABASE_ERRORS as error:
                    log.debug("could not wake readers (they poll): %s", error)
                    await self._give_back(connection)
                    connection = None
                await asyncio.sleep(WAKE_EVERY)
        finally:
            await self._give_back(connection)


def _wake_one(waiting: list[asyncio.Future[bool]]) -> None:
    """Wake the task that waits in ``waiting`` the shortest time (``_woken``), if any."""
    while waiting:
        wake = waiting.pop()
        if not wake.done():
            wake.set_result(True)
            return


async def _woken(waiting: list[asyncio.Future[bool]], *, keeping: bool) -> bool:
    """Wait in ``waiting`` to be woken (True), or, while ``keeping`` a connection, for
    ``KEEP_IDLE`` seconds to pass (False)."""
    loop = asyncio.get_running_loop()
    wake: asyncio.Future[bool] = loop.create_future()
    waiting.append(wake)
    timer = loop.call_later(KEEP_IDLE, resolve, wake, False) if keeping else None
    try:
        return await wake
    finally:
        if timer is not None:
            timer.cancel()
        if not wake.done() or wake.cancelled() or not wake.result():  # still listed
            with contextlib.suppress(ValueError):
                waiting.remove(wake)


def _padded(count: int) -> int:
    """The rows ``_append_of`` takes for ``count`` rows: a power of two, so that a few
    statements serve every batch (each a prepared statement of each connection's)."""
    return 1 << max(count - 1, 0).bit_length()


@functools.cache
def _append_of(size: int) -> str:
    """append() of the first $2 of ``size`` rows given field by field from $4 on (``_rows``'s
    fields, NULLs after them), the snapshots' rows in $3.

    Fields, not an array of rows: asyncpg checks an array parameter and each of its elements
    in Python (``isinstance`` against ``collections.abc``, four checks a row), and a
    parameter of a scalar type not at all: binding a batch at 64 spends at once cost 5.3k
    instructions a spend, not 12.5k (callgrind). Cut to $2 rows in the statement, append()
    is given the same array; PostgreSQL spends about 0.6 us a row more on building it than
    on reading an array parameter (a batch of 48 rows). The price: each size's first call
    on a connection prepares it, and asyncpg looks up a codec for each parameter (about
    1.3M instructions for 128 rows, which a 1,000-spend run met 3-7 times, as much as the
    binding saved): hence ``ROWS_AS_PARAMETERS``."""
    # public.: a name not qualified finds a temporary table's type first (20_append.sql).
    rows = ", ".join(
        "ROW(" + ", ".join(f"${n}" for n in range(first, first + ROW_FIELDS)) + ")"
        "::public.append_row"
        for first in range(4, 4 + ROW_FIELDS * size, ROW_FIELDS)
    )
    return f"SELECT command, outcome, positions FROM append($1, (ARRAY[{rows}])[:$2], $3)"


def _as_rows(fields: list[object]) -> list[tuple[object, ...]]:
    """``fields`` as rows of ``ROW_FIELDS``."""
    return list(zip(*[iter(fields)] * ROW_FIELDS, strict=True))


def _rows(batch: Sequence[Writes]) -> tuple[list[object], list[tuple[object, ...]]]:
    """The batch as append()'s rows (``append_row``, sql/functions/19_append_rows.sql):
    the fields of its events with its claims, one row after another, and its snapshots'
    rows. After its command's number (from 1), a command's n-th row holds its n-th event
    and its n-th claim, NULLs where it has fewer.

    Rows, not an array per column (when rows went as an array of them, ``_append_of``):
    asyncpg checks each element of an array parameter in Python, so a spend's event and
    claim cost sixteen checks in ten arrays of columns and four in one row. Each row is
    added as one tuple: joining an event's part to a claim's (zip_longest, tuple
    concatenation) cost a spend about 2,000 instructions more (callgrind).
    """
    fields: list[object] = []
    snapshots: list[tuple[object, ...]] = []
    # fmt: off
    for number, writes in enumerate(batch, start=1):
        claims = iter(writes.claims)
        for event in writes.events:
            if (record := next(claims, None)) is None:
                fields += (number, event.originator_id, event.originator_version, event.topic,
                           event.state, None, None, None, None)
            else:
                claim = record.claim
                fields += (number, event.originator_id, event.originator_version, event.topic,
                           event.state, claim.scope, claim.key, claim.fingerprint, record.answer)
        for record in claims:  # those beyond its events
            claim = record.claim
            fields += (number, None, None, None, None,
                       claim.scope, claim.key, claim.fingerprint, record.answer)
        for snapshot in writes.snapshots:
            snapshots.append((number, snapshot.originator_id, snapshot.originator_version,
                              snapshot.topic, snapshot.state, None, None, None, None))
    # fmt: on
    return fields, snapshots
