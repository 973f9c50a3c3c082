"""The relay's position: a row of ``projection_positions``, moved only after the broker's ack.

A batch runs inside one transaction that first takes a transaction-scoped
advisory lock for the relay's name (the owner's ``take_relay_turn``: no login role may
call the advisory lock functions themselves, ledger/store/sql/advisory_locks.sql): two
relays on one database take turns batch by batch instead of publishing the same events
side by side, and a relay that dies releases its turn with its connection. Nothing in that transaction
writes until the final ``move_relay_position``, so it gets a transaction id only then: the
store's readers, who wait for the oldest running transaction id (see
``ledger/store/event_store.py``), are not held back while the relay waits for
the broker.

The relay's database role, ``ledger_relay``, may read the store and
``projection_positions`` and write nothing but its own rows there, through two functions
of the owner's (``start_relay_position``, ``move_relay_position``:
ledger/store/sql/functions/).
"""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Connection = asyncpg.Connection | PoolConnectionProxy


async def claim(connection: Connection, name: str) -> int | None:
    """In a transaction: this relay's turn and its committed position; None while another has it."""
    if not await connection.fetchval("SELECT take_relay_turn($1)", name):
        return None
    position = await connection.fetchval(
        "SELECT position FROM projection_positions WHERE name = $1", name
    )
    return 0 if position is None else int(position)


async def commit(connection: Connection, name: str, position: int) -> None:
    """Record that everything up to ``position`` is in the broker (inside the claim's transaction)."""
    await connection.execute("SELECT move_relay_position($1, $2)", name, position)


async def register(pool: asyncpg.Pool, name: str) -> int:
    """The committed position, its row made at 0 if there is none yet: ``/metrics`` then
    shows the relay's lag from its start, also while it has never reached its broker."""
    return int(await pool.fetchval("SELECT start_relay_position($1)", name))


async def read_position(pool: asyncpg.Pool, name: str) -> int:
    """The committed position, read without taking a turn (for the relay's first log lines)."""
    position = await pool.fetchval(
        "SELECT position FROM projection_positions WHERE name = $1", name
    )
    return 0 if position is None else int(position)


async def beyond_a_relay(pool: asyncpg.Pool) -> str | None:
    """What the role the relay connects as may do that a relay never needs (append events,
    write tables: ``ledger_service``'s, a superuser's), in a few words; None for a role
    that may do no more than ``ledger_relay``."""
    row = await pool.fetchrow(
        """SELECT current_user AS role,
                  coalesce(has_function_privilege(
                      to_regprocedure('append(int, append_row[], append_row[])'), 'EXECUTE'),
                      false)
                  OR has_table_privilege('stored_events', 'INSERT, UPDATE, DELETE, TRUNCATE')
                      AS appends,
                  ARRAY(SELECT c.relname::text FROM pg_class c
                        JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                          AND c.relname <> 'stored_events'
                          AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
                        ORDER BY 1) AS writes"""
    )
    assert row is not None
    writes: list[str] = row["writes"]
    shown = ", ".join(writes[:3]) + (f" and {len(writes) - 3} more tables" if writes[3:] else "")
    powers = (["append events"] if row["appends"] else []) + ([f"write {shown}"] if writes else [])
    return f"{row['role']} may {' and '.join(powers)}" if powers else None
