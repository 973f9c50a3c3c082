"""The reads' share of a pool (ledger/store/read_connections.py), on a real one."""

from __future__ import annotations

import asyncpg
import pytest

from api.database import create_pool
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
