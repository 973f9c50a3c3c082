"""The relay's position: a row of ``projection_positions``, moved only after the broker's ack.

A batch runs inside one transaction that first takes a transaction-scoped
advisory lock for the relay's name: two relays on one database take turns
batch by batch instead of publishing the same events side by side, and a relay
that dies releases its turn with its connection. Nothing in that transaction
writes until the final ``UPDATE``, so it gets a transaction id only then: the
store's readers, who wait for the oldest running transaction id (see
``ledger/store/event_store.py``), are not held back while the relay waits for
the broker.
"""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Connection = asyncpg.Connection | PoolConnectionProxy

# The first half of the two-key advisory lock; the second is hashtext(name). Two-key
# locks are a key space of their own, apart from the store's one-key ordering lock.
_LOCK_CLASS = 748200102


async def claim(connection: Connection, name: str) -> int | None:
    """In a transaction: this relay's turn and its committed position; None while another has it."""
    if not await connection.fetchval(
        "SELECT pg_try_advisory_xact_lock($1, hashtext($2))", _LOCK_CLASS, name
    ):
        return None
    position = await connection.fetchval(
        "SELECT position FROM projection_positions WHERE name = $1", name
    )
    return 0 if position is None else int(position)


async def commit(connection: Connection, name: str, position: int) -> None:
    """Record that everything up to ``position`` is in the broker (inside the claim's transaction)."""
    await connection.execute(
        """INSERT INTO projection_positions (name, position) VALUES ($1, $2)
           ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = now()""",
        name,
        position,
    )


async def register(pool: asyncpg.Pool, name: str) -> int:
    """The committed position, its row made at 0 if there is none yet: ``/metrics`` then
    shows the relay's lag from its start, also while it has never reached its broker."""
    await pool.execute(
        """INSERT INTO projection_positions (name, position) VALUES ($1, 0)
           ON CONFLICT (name) DO NOTHING""",
        name,
    )
    return await read_position(pool, name)


async def read_position(pool: asyncpg.Pool, name: str) -> int:
    """The committed position, read without taking a turn (for the relay's first log lines)."""
    position = await pool.fetchval(
        "SELECT position FROM projection_positions WHERE name = $1", name
    )
    return 0 if position is None else int(position)
