"""Filling the fresh tables of a rebuild in several processes, each with its part of the streams.

Every view row is folded from the events of one stream only (an account's own
stream: its balance, statement lines, holds, grants and alert state; a Checkout
session's: its purchase), so the streams can be dealt out: a process folds
whole streams, in commit order, into the same fresh tables as the others
without ever touching their rows. The deliveries the notifications view makes
are keyed by event, so the parts do not collide there either.

The parent exports the snapshot of a REPEATABLE READ transaction and the last
position it sees; each worker reads in that snapshot up to that position, so
together they fold exactly the events a single pass would have. The parent
keeps the transaction open until they are done, then catches up from there.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

import asyncpg

from ledger import event_loop
from ledger.child_processes import spawned_without_main, started_deaf_to_ctrl_c
from ledger.heap import BATCHES_YOUNG, settle_after_start_up
from ledger.store.event_store import (
    Connection,
    ReplayedEvent,
    read_part_until,
    same_append,
    visible_head,
)
from ledger.store.failures import database_failure
from ledger.store.migrate import owner_session
from projections.events import (
    ProjectedEvent,
    UnreadableEvent,
    replayed_projected,
    times_as_microseconds,
)
from projections.runner import Projection, all_projections


class PartFailed(Exception):
    """A worker failed or died; the message says which and why (a database's error in one
    line, another error with the worker's traceback)."""


_DONE = "done"
_FAILED = "failed"
_PROGRESS = "progress"


@dataclass(frozen=True)
class PartJob:
    """What one worker process folds: its part of the streams, in one snapshot, up to one
    position, into the fresh tables of the views named."""

    database_url: str
    snapshot: str
    until: int
    part: int
    parts: int
    names: list[str]
    batch: int


async def fill_in_parts(
    connection: Connection,
    projections: Sequence[Projection],
    fresh: Callable[[Projection], str],
    on_progress: Callable[[int, int], None],
    *,
    jobs: int,
    database_url: str,
    batch: int,
) -> int:
    """Fill every ``fresh(projection)`` table from ``jobs`` processes; return the position reached.

    ``connection`` must not be in a transaction; the workers connect to
    ``database_url`` and act as the tables' owner.
    """
    names = [p.name for p in projections]
    context = multiprocessing.get_context("spawn")  # never fork a running event loop
    reports: Queue[tuple[str, int, Any]] = context.Queue()
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        snapshot = await connection.fetchval("SELECT pg_export_snapshot()")
        until = await visible_head(connection)
        workers = [
            context.Process(
                target=_work,
                args=(PartJob(database_url, snapshot, until, part, jobs, names, batch), reports),
                name=f"rebuild part {part + 1} of {jobs}",
                daemon=True,
            )
            for part in range(jobs)
        ]
        try:
            # The finally below stops them on Ctrl-C.
            with started_deaf_to_ctrl_c(), spawned_without_main():
                for worker in workers:
                    worker.start()
            await _follow(reports, workers, until, on_progress)
        finally:
            for worker in workers:
                if worker.pid is None:
                    continue  # never started
                if worker.is_alive():
                    worker.terminate()
                worker.join()
    return until


async def _follow(
    reports: Queue[tuple[str, int, Any]],
    workers: Sequence[BaseProcess],
    until: int,
    on_progress: Callable[[int, int], None],
) -> None:
    """Pass the workers' progress on until every one is done; raise if one failed or died."""
    loop = asyncio.get_running_loop()
    running = set(range(len(workers)))
    while running:
        try:
            kind, part, value = await loop.run_in_executor(None, reports.get, True, 1.0)
        except queue.Empty:
            if dead := [p for p in running if workers[p].exitcode not in (None, 0)]:
                exit_code = workers[dead[0]].exitcode
                raise PartFailed(f"rebuild part {dead[0] + 1} died ({exit_code})") from None
            continue
        if kind == _FAILED:
            raise PartFailed(f"rebuild part {part + 1} of {len(workers)} failed: {value}")
        if kind == _DONE:
            running.discard(part)
        elif kind == _PROGRESS:
            on_progress(value, until)


def _work(job: PartJob, reports: Queue[tuple[str, int, Any]]) -> None:
    """A worker process: fold its part of the streams, report progress, then done or failed."""
    settle_after_start_up(young=BATCHES_YOUNG)
    try:
        event_loop.run(_fill_part(job, reports))
    except BaseException as error:
        # The database's error is one line, said by the parent, and so is an event that
        # cannot be read (a row written by hand); any other keeps its traceback.
        said = database_failure(error)
        if isinstance(error, UnreadableEvent):
            said = f"{error}; the views are left as they were (see `ledger audit verify`)"
        reports.put((_FAILED, job.part, said or f"\n{traceback.format_exc()}"))
        if said is None:
            raise
        sys.exit(1)
    reports.put((_DONE, job.part, None))


async def _fill_part(job: PartJob, reports: Queue[tuple[str, int, Any]]) -> None:
    projections = [p for p in all_projections() if p.name in job.names]
    reader = await asyncpg.connect(job.database_url)
    writer = await asyncpg.connect(job.database_url)
    try:
        await owner_session(writer)
        async with (
            times_as_microseconds(writer),
            times_as_microseconds(reader),  # before its transaction: the codec reads the catalog
            reader.transaction(isolation="repeatable_read", readonly=True),
        ):
            await reader.execute(f"SET TRANSACTION SNAPSHOT '{job.snapshot}'")
            events = read_part_until(reader, job.until, job.part, job.parts)
            async for events_batch in _whole_commands(events, job.batch):
                if not _parent_alive():
                    return  # nobody is left to swap these tables in (the command was killed)
                decoded = replayed_projected(events_batch)
                reports.put((_PROGRESS, job.part, await _write(writer, projections, decoded)))
    finally:
        await reader.close()
        await writer.close()


async def _write(
    connection: Connection, projections: Sequence[Projection], events: list[ProjectedEvent]
) -> int:
    """Apply one batch to every fresh table in one transaction; return its size."""
    async with connection.transaction():
        for projection in projections:
            await projection.apply(connection, f"{projection.table}__rebuild", events)
    return len(events)


async def _whole_commands(
    chunks: AsyncIterator[list[ReplayedEvent]], size: int
) -> AsyncIterator[list[ReplayedEvent]]:
    """Batches of about ``size`` events that never end inside one append (``same_append``).

    The notifications view judges its alerts after the last event a command
    recorded on a stream (the next event of the batch is another stream's, or
    another moment's), as a single pass over whole appends does.
    """
    batch: list[ReplayedEvent] = []
    async for chunk in chunks:
        batch.extend(chunk)
        if len(batch) < size:
            continue
        # Cut before the last event that starts a command: what follows it is unknown yet.
        end = len(batch) - 1
        while end > 0 and same_append(batch[end], batch[end - 1]):
            end -= 1
        if end == 0:
            continue  # one command so far
        yield batch[:end]
        batch = batch[end:]
    if batch:
        yield batch


def _parent_alive() -> bool:
    parent = multiprocessing.parent_process()
    return parent is None or parent.is_alive()
