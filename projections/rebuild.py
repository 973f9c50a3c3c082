"""Rebuild views from position zero into fresh tables, then swap them in.

The new tables are made, and the old ones dropped, by the tables' owner: the
caller gives a connection acting as ``ledger_owner`` (the service's own role may
create nothing, see ledger/store/sql/grants.sql), and the service's grants are
applied to the new tables before the swap commits.

The live views keep answering while the new ones fill. Several views are
rebuilt in one pass over the events: each batch is read and decoded once and
applied to every fresh table. The swap happens in one transaction that first
locks the views' live position rows, which pauses the live projector for
them (its batch then waits in its locked road, holding no view's table,
``projections/runner.py``), applies what arrived meanwhile, takes every live table at once, renames the
tables (the new ones' indexes take the names the old ones' had) and moves the positions.

Taking the live tables can meet a reader that holds one of them and waits for
another (the expiry sweep's query reads ``holds``, then ``balances``): whoever waits
longest would be ended by PostgreSQL's deadlock check. The swap never waits that
long: it waits for each table at most ``SWAP_LOCK_WAIT``, lets go of all of them and
tries again, so the reader finishes and the swap follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Callable, Sequence

import asyncpg

from ledger.store.event_store import Connection, replay_whole_appends_after
from ledger.store.migrate import apply_grants
from projections.events import replayed_projected, times_as_microseconds
from projections.rebuild_parts import fill_in_parts
from projections.runner import Projection

# Each batch reads and writes every row its events touch once, so the larger the batch,
# the fewer times a busy account's rows go back and forth. 20,000 against 5,000: 11-12 %
# faster on 300,000 events of 3,000 accounts, peak 75 MB against 46 MB a process
# (50,000: 11 % faster again, 135 MB).
REBUILD_BATCH = 20_000

SWAP_LOCK_WAIT = "200ms"
"""How long the swap waits for a live table before letting go and trying again: well
under ``deadlock_timeout`` (1 s by default), so the deadlock check never ends a reader."""


REBUILD_LOCK = 748200103
"""The advisory lock a rebuild holds from start to end: every rebuild fills tables of the
same names (``_fresh``), so a second one would drop and re-create them under the first."""


class RebuildRunning(Exception):
    """Another rebuild holds ``REBUILD_LOCK`` on this database."""


def _fresh(projection: Projection) -> str:
    return f"{projection.table}__rebuild"


async def _apply_next_batch(
    connection: Connection, projections: Sequence[Projection], after: int
) -> tuple[int, int]:
    """Apply one batch to every fresh table; return (events applied, new position)."""
    events = await replay_whole_appends_after(connection, after, REBUILD_BATCH)
    if events:
        decoded = replayed_projected(events)
        for projection in projections:
            await projection.apply(connection, _fresh(projection), decoded)
    return len(events), (events[-1].notification_id if events else after)


async def rebuild_all(
    connection: Connection,
    projections: Sequence[Projection],
    on_progress: Callable[[int, int], None],
    *,
    jobs: int = 1,
    database_url: str | None = None,
) -> int:
    """Rebuild every view in ``projections`` in one pass; return the position they are at.

    ``connection`` acts as the tables' owner. ``on_progress(events_applied, position)``
    is called after every batch. With ``jobs`` above 1 the fresh tables are filled by
    that many processes, each folding its part of the streams
    (projections/rebuild_parts.py), which connect to ``database_url``. Raises
    RebuildRunning while another rebuild runs on the database.
    """
    if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", REBUILD_LOCK):
        raise RebuildRunning(
            "another `ledger projections rebuild` is running on this database: "
            "run this one when it has finished"
        )
    try:
        async with times_as_microseconds(connection):
            return await _rebuild_all(connection, projections, on_progress, jobs, database_url)
    finally:
        with contextlib.suppress(Exception):  # else the session's end lets it go
            await connection.execute("SELECT pg_advisory_unlock($1)", REBUILD_LOCK)


async def _rebuild_all(
    connection: Connection,
    projections: Sequence[Projection],
    on_progress: Callable[[int, int], None],
    jobs: int,
    database_url: str | None,
) -> int:
    await _create_fresh_tables(connection, projections)
    filled = 0

    def counting(events: int, position: int) -> None:
        nonlocal filled
        filled += events
        on_progress(events, position)

    try:
        if jobs > 1:
            if database_url is None:
                raise ValueError(
                    "a rebuild in parallel needs the database_url to connect its workers"
                )
            position = await fill_in_parts(
                connection,
                projections,
                _fresh,
                counting,
                jobs=jobs,
                database_url=database_url,
                batch=REBUILD_BATCH,
            )
        else:
            position = await _fill(connection, projections, counting)
        # Filled tables swapped in with no statistics get the plans of empty ones until
        # autovacuum comes round (with -1 rows, PostgreSQL guesses their size from pages).
        await _analyze_fresh_tables(connection, projections)
        return await _swap_in(connection, projections, on_progress, position, filled)
    except BaseException:  # a failure, or Ctrl-C: the live views are as they were
        await _drop_fresh_tables(connection, projections)
        raise


async def _analyze_fresh_tables(connection: Connection, projections: Sequence[Projection]) -> None:
    await connection.execute(f"ANALYZE {', '.join(_fresh(p) for p in projections)}")


async def _create_fresh_tables(connection: Connection, projections: Sequence[Projection]) -> None:
    await connection.execute(_dropping_fresh_tables(projections))
    for projection in projections:
        await connection.execute(
            f"CREATE TABLE {_fresh(projection)} (LIKE {projection.table} INCLUDING ALL)"
        )


async def _drop_fresh_tables(connection: Connection, projections: Sequence[Projection]) -> None:
    """Drop what a rebuild that did not finish had filled (a swap renamed them away).

    As well as the connection allows: when it cannot (the database went away), the next
    rebuild drops them first, and the error that ended this one is the one to report.
    """
    with contextlib.suppress(Exception):
        await connection.execute(_dropping_fresh_tables(projections))


def _dropping_fresh_tables(projections: Sequence[Projection]) -> str:
    return f"DROP TABLE IF EXISTS {', '.join(_fresh(p) for p in projections)}"


async def _fill(
    connection: Connection,
    projections: Sequence[Projection],
    on_progress: Callable[[int, int], None],
) -> int:
    """Fill the fresh tables in one pass from position zero; return the position reached."""
    position = 0
    while True:  # one transaction per batch: constant memory, no long transaction
        async with connection.transaction():
            count, position = await _apply_next_batch(connection, projections, position)
        if not count:
            return position
        on_progress(count, position)


async def _swap_in(
    connection: Connection,
    projections: Sequence[Projection],
    on_progress: Callable[[int, int], None],
    position: int,
    analyzed_at: int,
) -> int:
    """Catch the fresh tables up from ``position`` with the live projector paused, swap them in.

    ``analyzed_at``: the events the tables held when they were analyzed. A fill that
    stopped short (its look's watermark held back by a long transaction that ended since)
    leaves the catch-up here most of them; the tables are analyzed again then, or they
    came in with the statistics of nearly empty ones."""
    async with connection.transaction():
        names = sorted(p.name for p in projections)
        await connection.execute(
            """INSERT INTO projection_positions (name) SELECT unnest($1::text[])
               ON CONFLICT DO NOTHING""",
            names,
        )
        await connection.execute(
            """SELECT 1 FROM projection_positions WHERE name = any($1)
               ORDER BY name FOR UPDATE""",
            names,
        )
        caught_up = 0
        while True:  # what arrived since, with the live projector paused
            count, position = await _apply_next_batch(connection, projections, position)
            if not count:
                break
            caught_up += count
            on_progress(count, position)
        if caught_up > analyzed_at:
            await _analyze_fresh_tables(connection, projections)
        await _take_live_tables(connection, [p.table for p in projections])
        for projection in projections:
            old = f"{projection.table}__old"
            index_names = await _index_names(connection, projection.table)
            await connection.execute(f"ALTER TABLE {projection.table} RENAME TO {old}")
            await connection.execute(
                f"ALTER TABLE {_fresh(projection)} RENAME TO {projection.table}"
            )
            await connection.execute(f"DROP TABLE {old}")
            await _rename_indexes(connection, projection.table, index_names)
        await apply_grants(connection)
        await connection.execute(
            """UPDATE projection_positions SET position = $2, updated_at = now()
               WHERE name = any($1)""",
            names,
            position,
        )
    return position


async def _take_live_tables(connection: Connection, tables: list[str]) -> None:
    """Every live table in ``ACCESS EXCLUSIVE`` mode, all or none: a wait past
    ``SWAP_LOCK_WAIT`` lets go of those taken (a savepoint) and tries again, after a
    jittered pause that grows."""
    for attempt in itertools.count():
        try:
            async with connection.transaction():
                await connection.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_WAIT}'")
                await connection.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
                await connection.execute("SET LOCAL lock_timeout TO DEFAULT")
            return
        except asyncpg.LockNotAvailableError:
            await asyncio.sleep(random.uniform(0, min(0.05 * 2**attempt, 1.0)))  # noqa: S311


# Each index of a table by what it is: the constraint it backs (primary key, unique, if
# any) and its definition without its own name and its table's.
_INDEXES = r"""SELECT coalesce(k.contype::text, '') || ' '
                      || regexp_replace(pg_get_indexdef(i.indexrelid),
                                        '^CREATE (UNIQUE )?INDEX \S+ ON \S+ ', '\1') AS shape,
                      c.relname AS name
               FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid
                    AND k.contype IN ('p', 'u', 'x')
               WHERE i.indrelid = $1::regclass ORDER BY shape, name"""


async def _index_names(connection: Connection, table: str) -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for row in await connection.fetch(_INDEXES, table):
        names.setdefault(row["shape"], []).append(row["name"])
    return names


async def _rename_indexes(connection: Connection, table: str, names: dict[str, list[str]]) -> None:
    """Give the swapped-in table's indexes (and so their constraints) the names the table's
    indexes had: ``LIKE ... INCLUDING ALL`` names them after the fresh table, and the
    migrations name them (a later migration may drop or replace one by its name)."""
    for shape, current in (await _index_names(connection, table)).items():
        for now, before in zip(current, names.get(shape, []), strict=False):
            if now != before:
                await connection.execute(f"ALTER INDEX {_quoted(now)} RENAME TO {_quoted(before)}")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def rebuild(
    connection: Connection, projection: Projection, on_progress: Callable[[int, int], None]
) -> int:
    """Rebuild one view; see ``rebuild_all``."""
    return await rebuild_all(connection, [projection], on_progress)
