"""Reads at the same moment (balances, streams loaded for commands) share one query and
answer as reads of their own (ledger/store/shared_reads.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from ledger.domain.ids import account_stream_id
from ledger.store.event_store import EventStore
from ledger.store.shared_reads import SharedReads
from projections.balance_reads import balance_reads
from tests.conftest import IsolatedDatabase
from tests.support.events import caught_up
from tests.support.ledger import open_account
from tests.support.waiting import until

ACCOUNTS = [f"acct_batch_{n}" for n in range(5)]


async def opened_and_projected(database: IsolatedDatabase) -> None:
    ledger = database.ledger()
    try:
        for number, account_id in enumerate(ACCOUNTS):
            await open_account(ledger, account_id, allowance=100 * (number + 1))
    finally:
        await ledger.uow.committer.stop()
    await caught_up(database.store)


async def test_reads_at_once_share_a_query_and_each_gets_its_own_row(
    isolated_db: IsolatedDatabase,
) -> None:
    await opened_and_projected(isolated_db)
    alone = [await balance_reads(isolated_db.pool).read(a) for a in [*ACCOUNTS, "acct_unknown"]]
    reads = balance_reads(isolated_db.pool)

    together = await asyncio.gather(
        *(reads.read(a) for a in [*ACCOUNTS, "acct_unknown", *ACCOUNTS])
    )

    assert together == [*alone, *alone[:-1]]
    assert [row.monthly_allowance for row in alone[:-1] if row] == [100, 200, 300, 400, 500]
    assert alone[-1] is None
    assert reads.queries == 1  # the query starts once all eleven, asked at once, are waiting


async def test_a_lone_read_queries_at_once_every_time(isolated_db: IsolatedDatabase) -> None:
    await opened_and_projected(isolated_db)
    reads = balance_reads(isolated_db.pool)

    first = await reads.read(ACCOUNTS[0])
    second = await reads.read(ACCOUNTS[1])

    assert first is not None
    assert first.account_id == ACCOUNTS[0]
    assert second is not None
    assert second.account_id == ACCOUNTS[1]
    assert reads.queries == 2


async def test_a_failed_query_fails_every_read_in_it_and_the_next_reads_query_again(
    isolated_db: IsolatedDatabase,
) -> None:
    await opened_and_projected(isolated_db)
    reads = balance_reads(isolated_db.pool)
    owner = await asyncpg.connect(isolated_db.url)
    try:
        await owner.execute("ALTER TABLE balances RENAME TO balances_away")
        try:
            failed = await asyncio.gather(
                *(reads.read(a) for a in ACCOUNTS), return_exceptions=True
            )
        finally:
            await owner.execute("ALTER TABLE balances_away RENAME TO balances")
    finally:
        await owner.close()

    assert all(isinstance(error, asyncpg.UndefinedTableError) for error in failed)
    assert await reads.read(ACCOUNTS[2]) is not None


async def test_a_reader_that_gives_up_leaves_the_others_their_answers(
    isolated_db: IsolatedDatabase,
) -> None:
    await opened_and_projected(isolated_db)
    reads = balance_reads(isolated_db.pool)
    first = asyncio.ensure_future(reads.read(ACCOUNTS[0]))
    given_up = asyncio.ensure_future(reads.read(ACCOUNTS[1]))
    last = asyncio.ensure_future(reads.read(ACCOUNTS[2]))
    await asyncio.sleep(0)
    given_up.cancel()

    answers = await asyncio.gather(first, last)

    assert [row.account_id for row in answers if row] == [ACCOUNTS[0], ACCOUNTS[2]]
    with pytest.raises(asyncio.CancelledError):
        await given_up


async def test_streams_loaded_at_once_share_a_query_and_each_gets_its_own_events(
    isolated_db: IsolatedDatabase,
) -> None:
    await opened_and_projected(isolated_db)
    streams = [account_stream_id(a) for a in ACCOUNTS]
    unknown = account_stream_id("acct_unknown")
    alone = [await EventStore(isolated_db.pool).load_many_from_snapshots([s]) for s in streams]
    store = EventStore(isolated_db.pool)

    together = await asyncio.gather(
        store.load_many_from_snapshots(streams[:2]),
        store.load_many_from_snapshots([streams[1], unknown, streams[2]]),
        *(store.load_many_from_snapshots([s]) for s in streams[3:]),
    )

    assert together[0] == alone[0] + alone[1]
    assert together[1] == [*alone[1], None, *alone[2]]  # None for a stream with no events
    assert together[2:] == alone[3:]
    [(_, [event])] = alone[0]
    assert event.topic.rsplit(":", 1)[-1] == "AccountOpened"
    assert store.shared_loads.queries == 1


async def test_a_read_soon_after_another_goes_on_the_kept_connection_given_back_once_idle(
    isolated_db: IsolatedDatabase,
) -> None:
    pool = isolated_db.pool
    backends: list[int] = []

    async def fetch_many(connection: Any, keys: Sequence[int]) -> dict[int, int]:
        backends.append(await connection.fetchval("SELECT pg_backend_pid()"))
        return {key: key * 10 for key in keys}

    def in_use() -> int:
        return pool.get_size() - pool.get_idle_size()

    before = in_use()
    reads: SharedReads[int, int] = SharedReads(fetch_many, pool, keep_idle=0.5)

    assert await reads.read(1) == 10
    assert in_use() == before + 1  # kept for the next read
    assert await reads.read(2) == 20
    assert backends[0] == backends[1]
    await until(lambda: in_use() == before, what="the kept connection given back once idle")
    assert await reads.read(3) == 30  # and taken again for the next
    assert reads.queries == 3


async def test_a_read_asked_as_the_keep_idle_ends_is_answered_not_cancelled(
    isolated_db: IsolatedDatabase,
) -> None:
    """The idle wait's timer fires, and before the querying task resumes a read is asked:
    it found the task still there and woke nothing, and the task, seeing its wait end
    empty, stopped and cancelled the read ("the server is stopping", a 503 under load)."""

    async def fetch_many(connection: Any, keys: Sequence[int]) -> dict[int, int]:
        return {key: key * 10 for key in keys}

    reads: SharedReads[int, int] = SharedReads(fetch_many, isolated_db.pool, keep_idle=5)
    assert await reads.read(1) == 10
    await until(lambda: reads._idle is not None, what="the task waiting, idle")
    idle = reads._idle
    assert idle is not None
    idle.set_result(False)  # as its timer does when keep_idle runs out
    assert await reads.read(2) == 20
    assert reads.queries == 2
