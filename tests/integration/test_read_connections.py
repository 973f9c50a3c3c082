"""The reads' share of a pool (ledger/store/read_connections.py), on a real one."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest

from api.database import PoolTooSmall, create_pool, read_connections
from ledger.request_scope import RequestScope
from ledger.store.read_connections import PoolBusy, ReadConnections


async def test_reads_past_their_share_are_busy_while_the_pool_still_gives_connections(
    pool: asyncpg.Pool,
) -> None:
    reads = ReadConnections(pool, limit=2, wait_seconds=0.1)
    async with reads.acquire(), reads.acquire():
        assert reads.in_use == 2
        with pytest.raises(PoolBusy):
            await reads.fetchval("SELECT 1")
        async with pool.acquire() as connection:  # a command's
            assert await connection.fetchval("SELECT 1") == 1
    assert reads.in_use == 0
    assert await reads.fetchval("SELECT $1::int", 7) == 7


async def test_a_read_that_gets_no_connection_from_the_pool_gives_its_share_back(
    database_url: str,
) -> None:
    small = await create_pool(database_url, min_size=1, max_size=1, wait_seconds=0.1)
    try:
        reads = ReadConnections(small, limit=1, wait_seconds=0.1)
        async with small.acquire():  # a command holds the pool's only connection
            with pytest.raises(PoolBusy):
                await reads.fetchval("SELECT 1")
            assert reads.in_use == 0
        assert await reads.fetchval("SELECT 1") == 1
    finally:
        await small.close()


async def test_a_read_that_waited_for_its_share_waits_for_the_pool_only_what_is_left(
    database_url: str,
) -> None:
    """A read that waited for a slot of its share, then found the pool taken (a command
    had the connection the slot's read gave back), waited for the pool's connection again,
    as long as the pool makes anyone wait: twice its wait in all, without end here (a pool
    that waits as long as it takes). It is now busy once its own wait is over."""
    small = await create_pool(database_url, min_size=2, max_size=2, wait_seconds=None)
    try:
        reads = ReadConnections(small, limit=1, wait_seconds=0.2)
        command_has_one = asyncio.Event()

        async def command() -> None:  # waits for a connection of the pool, and keeps it
            async with small.acquire():
                command_has_one.set()
                await asyncio.sleep(60)

        async with small.acquire():  # a command holds the pool's other connection
            slot = reads.acquire()
            await slot.__aenter__()  # a read holds the share's only slot
            waiting_command = asyncio.create_task(command())
            await asyncio.sleep(0)  # the command queues for the pool
            read = asyncio.create_task(reads.fetchval("SELECT 1"))
            await asyncio.sleep(0)  # the read queues for the slot
            await slot.__aexit__(None, None, None)  # the command gets the connection back
            async with asyncio.timeout(30):  # not a measure: only a bound for a wait without end
                await command_has_one.wait()
                with pytest.raises(PoolBusy):
                    await read
            waiting_command.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting_command
        assert reads.in_use == 0
        assert await reads.fetchval("SELECT 1") == 1
    finally:
        await small.close()


@pytest.mark.parametrize(
    ("size", "writers", "reads_may_hold"), [(20, 8, 9), (20, 12, 5), (30, 4, 23), (8, 8, 1)]
)
async def test_the_reads_share_leaves_the_commands_a_connection_for_each_writer_the_wake_up_and_two(
    database_url: str, size: int, writers: int, reads_may_hold: int
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=size, wait_seconds=0.1)
    try:
        reads = read_connections(pool, writers)
    finally:
        await pool.close()
    assert reads.limit == reads_may_hold


async def test_a_pool_that_leaves_the_commands_less_than_they_keep_is_said_so(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=6, wait_seconds=0.1)
    try:
        reads = read_connections(pool, writers=8)
    finally:
        await pool.close()
    assert reads.limit == 1
    said = [r.getMessage() for r in caplog.records if r.name == "api.database"]
    assert said == [
        "the API's database pool has 6 connections, no more than the 11 its commands keep "
        "(8 group-commit writers, 1 for its wake-ups, 2 for their loads): reads may hold 1 "
        "of them, the commands the other 5"
    ]


async def test_a_pool_of_one_connection_is_refused_for_the_api(database_url: str) -> None:
    """Its reads' one connection was the whole pool: a read behind a lock held it, and
    every command waited for it."""
    pool = await create_pool(database_url, min_size=1, max_size=1, wait_seconds=0.1)
    try:
        with pytest.raises(PoolTooSmall, match="a database pool of 1 connection"):
            read_connections(pool)
    finally:
        await pool.close()


async def test_reads_within_one_wait_wait_for_the_share_once_in_all(pool: asyncpg.Pool) -> None:
    """A request reads several times (its token, a view, the store); each read that found
    the share taken waited as long again. Within a ``RequestScope`` (each HTTP request's)
    a later read waits only what is left of the first one's wait: here none."""
    reads = ReadConnections(pool, limit=1, wait_seconds=0.2)

    async def two_reads() -> list[str]:
        said = []
        for wait in (0.2, 60.0):  # the second would wait a minute on its own
            reads.wait_seconds = wait
            try:
                await reads.fetchval("SELECT 1")
            except PoolBusy:
                said.append("busy")
        return said

    with RequestScope():
        async with reads.acquire():  # another read holds the share's only slot
            async with asyncio.timeout(30):  # not a measure: only a bound for a long wait
                said = await two_reads()
    assert said == ["busy", "busy"]
    assert reads.in_use == 0
