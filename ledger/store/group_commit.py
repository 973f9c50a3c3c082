"""Group commit: concurrent commands share one transaction, one round trip, one fsync.

Commands queue their unit of work; a few writer tasks each take whatever is
queued (up to ``MAX_BATCH``) and send it as one ``append_batch()`` call in an
implicit transaction. There is no fixed wait: while one batch commits, the next
one gathers, so batches grow with load and a lone command goes at once. A
command's future resolves only after its batch committed, so an answer still
means "durable"; each command succeeds or fails on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import asyncpg
import msgspec
from eventsourcing.persistence import StoredEvent

from ledger.store.event_store import ConcurrencyConflict
from ledger.store.idempotency import IdempotencyKeyTaken, StoredAnswer

# Each command is a subtransaction: stay under PostgreSQL's 64-entry subxid cache.
MAX_BATCH = 48
WRITERS = 4

_APPEND_BATCH = """SELECT command, outcome, positions FROM append_batch(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"""


class IdempotencyRecord(msgspec.Struct, frozen=True):
    """A unique key to claim with the command's events, and what to keep under it.

    Claiming a key that is taken fails the command (IdempotencyKeyTaken): that is
    how repeated requests, redelivered Stripe events and payment intents that
    already paid a session are recognised, atomically with the events.
    """

    scope: str
    key: str
    answer: StoredAnswer


class UnitOfWork(msgspec.Struct, frozen=True):
    """One command's writes: its events, the keys it claims, snapshots."""

    events: Sequence[StoredEvent]
    keys: Sequence[IdempotencyRecord] = ()
    snapshots: Sequence[StoredEvent] = ()


class GroupCommitter:
    """Commits units of work in batches; start() before use, stop() at shutdown."""

    def __init__(self, pool: asyncpg.Pool, writers: int = WRITERS) -> None:
        self.pool = pool
        self.writers = writers
        self._queue: asyncio.Queue[tuple[UnitOfWork, asyncio.Future[list[int]]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.batches = 0
        self.commands = 0

    def start(self) -> None:
        """Start the writer tasks (in the running event loop)."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._write_batches()) for _ in range(self.writers)]

    async def stop(self) -> None:
        """Finish what is queued, then stop the writers."""
        await self._queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def commit(self, unit: UnitOfWork) -> list[int]:
        """Commit one command's writes; return its events' positions.

        Raises ConcurrencyConflict or IdempotencyKeyTaken for this command alone.
        """
        self.start()
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        await self._queue.put((unit, future))
        return await future

    async def _write_batches(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            except BaseException as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                if isinstance(error, asyncio.CancelledError):
                    raise
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[tuple[UnitOfWork, asyncio.Future[list[int]]]]) -> None:
        columns = _columns([unit for unit, _ in batch])
        async with self.pool.acquire() as connection:
            try:
                rows = await connection.fetch(_APPEND_BATCH, len(batch), *columns)
            except BaseException:
                # append_batch() holds a session-level lock while it inserts.
                with contextlib.suppress(Exception):
                    await connection.execute("SELECT pg_advisory_unlock_all()")
                raise
        self.batches += 1
        self.commands += len(batch)
        for row in rows:
            _, future = batch[row["command"] - 1]
            if future.done():
                continue
            if row["outcome"] == "ok":
                future.set_result(list(row["positions"]))
            elif row["outcome"] == "conflict":
                future.set_exception(ConcurrencyConflict("another writer appended first"))
            else:
                future.set_exception(IdempotencyKeyTaken("the idempotency key is taken"))


def _columns(units: list[UnitOfWork]) -> list[list[object]]:
    """The batch as the 15 parallel arrays append_batch() takes."""
    rows: list[tuple[object, ...]] = []
    keys: list[tuple[object, ...]] = []
    snapshots: list[tuple[object, ...]] = []
    for number, unit in enumerate(units, start=1):
        rows.extend(
            (number, e.originator_id, e.originator_version, e.topic, e.state) for e in unit.events
        )
        keys.extend(
            (number, k.scope, k.key, k.answer.request_hash, k.answer.response) for k in unit.keys
        )
        snapshots.extend(
            (number, s.originator_id, s.originator_version, s.topic, s.state)
            for s in unit.snapshots
        )
    return [*_transpose(rows, 5), *_transpose(keys, 5), *_transpose(snapshots, 5)]


def _transpose(rows: list[tuple[object, ...]], width: int) -> list[list[object]]:
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]
