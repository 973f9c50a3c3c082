"""The projector asks first whether any view has an event to apply (projections/runner.py):
one round trip, where the batch's transaction took six to find nothing. Once it knows
where it left the views, the read of the events after them is that question, and the
batch writes in one statement, its own transaction, which moves the positions only if
their rows are as it left them. A batch writes every view and their positions in one
statement (projections/writes.py)."""

from __future__ import annotations

import asyncio
import logging
import re

import asyncpg
import pytest

from api.database import create_pool, owner_connection
from ledger.commands import GrantCredits, PlaceHold, SpendCredits
from ledger.notifications.endpoints import EndpointRegistry
from ledger.store import wakeups
from ledger.store.event_store import NOTIFY_CHANNEL, EventStore
from projections.rebuild import rebuild_all
from projections.runner import (
    _ANYTHING_TO_APPLY,
    POLL_SECONDS,
    Projector,
    _apply_batch_on,
    all_projections,
    apply_batch,
    catch_up,
)
from tests.conftest import IsolatedDatabase
from tests.support.events import caught_up, settled
from tests.support.ledger import open_account
from tests.support.waiting import until


async def opened(isolated_db: IsolatedDatabase, count: int) -> list[str]:
    ledger = isolated_db.ledger()
    account_ids = [f"acct_peek_{n}" for n in range(count)]
    for account_id in account_ids:
        await open_account(ledger, account_id, 100)
    return account_ids


async def positions(isolated_db: IsolatedDatabase) -> dict[str, int]:
    rows = await isolated_db.pool.fetch("SELECT name, position FROM projection_positions")
    return {row["name"]: row["position"] for row in rows}


async def batches_up_to(isolated_db: IsolatedDatabase, head: int) -> dict[str, int]:
    """``apply_batch`` until every view is at ``head``; the events each view applied. One
    batch stops at its own look's watermark, which a transaction of another database can
    hold short of ``head`` for a moment (see tests/support/events.py, ``views_past``)."""
    names = [p.name for p in all_projections()]
    applied = dict.fromkeys(names, 0)

    async def at_head() -> bool:
        for name, count in (await apply_batch(isolated_db.store, all_projections())).items():
            applied[name] += count
        at = await positions(isolated_db)
        return all(at.get(name) == head for name in names)

    await until(at_head, what=f"every view at position {head}")
    return applied


async def test_caught_up_views_get_nothing_and_no_position_is_even_locked(
    isolated_db: IsolatedDatabase,
) -> None:
    await opened(isolated_db, 3)
    await caught_up(isolated_db.store)
    before = await positions(isolated_db)
    lockers = await isolated_db.pool.fetch("SELECT name, xmax FROM projection_positions")

    applied = await apply_batch(isolated_db.store, all_projections())

    assert applied == {p.name: 0 for p in all_projections()}
    assert await positions(isolated_db) == before
    # A batch's transaction locks them FOR UPDATE, which marks each row with its xid.
    assert await isolated_db.pool.fetch("SELECT name, xmax FROM projection_positions") == lockers


async def test_a_view_without_a_position_yet_is_applied_though_the_others_are_caught_up(
    isolated_db: IsolatedDatabase,
) -> None:
    await opened(isolated_db, 3)
    await caught_up(isolated_db.store)
    head = await isolated_db.store.head_position()
    # The statement as a view added since: no row, no lines.
    await isolated_db.pool.execute("TRUNCATE statement_lines")
    await isolated_db.pool.execute("DELETE FROM projection_positions WHERE name = 'statement'")

    applied = await batches_up_to(isolated_db, head)

    assert applied["statement"] == 3
    assert {n for n, count in applied.items() if count} == {"statement"}
    assert (await positions(isolated_db))["statement"] == head


async def test_a_view_behind_the_others_is_applied_from_its_own_position(
    isolated_db: IsolatedDatabase,
) -> None:
    await opened(isolated_db, 2)
    await caught_up(isolated_db.store)
    await opened_more(isolated_db)
    await caught_up(isolated_db.store)
    await isolated_db.pool.execute("TRUNCATE statement_lines")
    await isolated_db.pool.execute(
        "UPDATE projection_positions SET position = 0 WHERE name = 'statement'"
    )

    applied = await batches_up_to(isolated_db, await isolated_db.store.head_position())

    assert applied["statement"] == 3
    assert sum(applied.values()) == 3


async def opened_more(isolated_db: IsolatedDatabase) -> None:
    await open_account(isolated_db.ledger(), "acct_peek_late", 100)


def opens_a_transaction_or_locks(query: str) -> bool:
    return query.strip().upper().startswith(("BEGIN", "COMMIT")) or "FOR UPDATE" in query


async def test_a_projector_that_knows_where_it_left_the_views_reads_without_a_look(
    isolated_db: IsolatedDatabase,
) -> None:
    await opened(isolated_db, 2)
    await settled(isolated_db.store)
    left_at: dict[str, tuple[int, int]] = {}
    queries: list[str] = []
    projections = all_projections(remembering=True)
    async with isolated_db.pool.acquire() as connection:
        connection.add_query_logger(lambda record: queries.append(record.query))
        # Not known yet: it looks, and learns where it left the views as it applies.
        assert set((await _apply_batch_on(connection, projections, 500, left_at)).values()) == {2}
        await asyncio.sleep(0)  # the logger is called soon after each query
        assert queries[0] == _ANYTHING_TO_APPLY
        assert any(opens_a_transaction_or_locks(q) for q in queries)  # the locked road
        await opened_more(isolated_db)
        await settled(isolated_db.store)
        head = await isolated_db.store.head_position()
        queries.clear()

        applied = await _apply_batch_on(connection, projections, 500, left_at)
        await asyncio.sleep(0)

    assert set(applied.values()) == {1}
    # The read of the events after where it left them (then the new account's rows, which
    # the views' memories do not hold), and the batch: one statement, its own transaction.
    assert queries[0].lstrip().startswith("SELECT originator_id")
    assert queries[-1].startswith("WITH ")
    assert "move_projection_positions(" in queries[-1]
    assert not any(opens_a_transaction_or_locks(q) for q in queries), queries
    assert await positions(isolated_db) == dict.fromkeys(applied, head)
    rows = await isolated_db.pool.fetch("SELECT name, position, xmin FROM projection_positions")
    assert left_at == {row["name"]: (row["position"], int(row["xmin"])) for row in rows}


async def test_a_projector_whose_views_another_moved_applies_only_what_is_new_to_them(
    isolated_db: IsolatedDatabase,
) -> None:
    ledger = isolated_db.ledger()
    (account_id,) = await opened(isolated_db, 1)
    left_at: dict[str, tuple[int, int]] = {}
    this_one = all_projections(remembering=True)
    await caught_up(isolated_db.store, projections=this_one, left_at=left_at)
    for key, store_next in (("first", "another"), ("second", "this")):
        await ledger.execute(
            SpendCredits(account_id=account_id, amount=10, reason="test", idempotency_key=key)
        )
        if store_next == "another":  # it applies the first spend; this one still reads from before
            await caught_up(isolated_db.store)

    applied = await caught_up(isolated_db.store, projections=this_one, left_at=left_at)

    assert applied == len(this_one)  # the second spend, once for each view
    remaining = "SELECT allowance_remaining FROM balances WHERE account_id = $1"
    assert await isolated_db.pool.fetchval(remaining, account_id) == 80
    lines = "SELECT count(*) FROM statement_lines WHERE account_id = $1"
    assert await isolated_db.pool.fetchval(lines, account_id) == 3


_VIEWS = {
    "balances": "account_id",
    "statement_lines": "account_id, position",
    "holds": "hold_id",
    "grants": "grant_id",
    "notifier_accounts": "stream_id",
}


async def view_rows(isolated_db: IsolatedDatabase) -> dict[str, list[dict[str, object]]]:
    return {
        table: [
            dict(r) for r in await isolated_db.pool.fetch(f"SELECT * FROM {table} ORDER BY {key}")
        ]
        for table, key in _VIEWS.items()
    }


async def test_a_batch_writes_every_view_and_the_positions_in_one_statement(
    isolated_db: IsolatedDatabase,
) -> None:
    ledger = isolated_db.ledger()
    (account_id,) = await opened(isolated_db, 1)
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        "http://127.0.0.1:9/hook", ["credits.spent"]
    )
    left_at: dict[str, tuple[int, int]] = {}
    projections = all_projections(remembering=True)
    await caught_up(isolated_db.store, projections=projections, left_at=left_at)
    for command in (
        GrantCredits(account_id=account_id, amount=50, priority=10, expires_at=None,
                     reason="promo", idempotency_key="grant"),
        SpendCredits(account_id=account_id, amount=120, reason="work", idempotency_key="spend"),
        PlaceHold(account_id=account_id, amount=5, expires_in_seconds=60, reason="job",
                  idempotency_key="hold"),
    ):  # fmt: skip
        await ledger.execute(command)
    await settled(isolated_db.store)
    queries: list[str] = []
    async with isolated_db.pool.acquire() as connection:
        connection.add_query_logger(lambda record: queries.append(record.query))
        applied = await _apply_batch_on(connection, projections, 500, left_at)
        await asyncio.sleep(0)  # the logger is called soon after each query

    writes = [q for q in queries if "INSERT INTO" in q or q.lstrip().startswith("UPDATE")]
    assert len(writes) == 1, writes
    assert writes[0].startswith("WITH ")
    for table in [*_VIEWS, "webhook_deliveries"]:
        assert re.search(rf"(INSERT INTO|UPDATE) {table}\b", writes[0]), table
    assert "move_projection_positions(" in writes[0]
    assert "SELECT pg_notify($1, '')" in queries  # the deliveries' wake-up, once committed
    assert set(applied.values()) == {3}
    assert await isolated_db.pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 1
    # What the one statement wrote is what a rebuild writes view by view.
    live = await view_rows(isolated_db)
    async with owner_connection(isolated_db.url) as connection:
        await rebuild_all(connection, all_projections(), lambda *_: None)
    assert await view_rows(isolated_db) == live


async def test_a_projector_never_holds_a_view_a_rebuild_waits_to_swap_in(
    isolated_db: IsolatedDatabase,
) -> None:
    """A rebuild's swap holds the position rows, then takes the live tables. A projector
    that finds its rows held must not be holding those tables while it waits: it waits
    in its locked road, and the swap takes the tables at once."""
    (account_id,) = await opened(isolated_db, 1)
    left_at: dict[str, tuple[int, int]] = {}
    projections = all_projections(remembering=True)
    await caught_up(isolated_db.store, projections=projections, left_at=left_at)
    await opened_more(isolated_db)
    await settled(isolated_db.store)
    names = sorted(p.name for p in projections)
    async with isolated_db.pool.acquire() as swap:
        async with swap.transaction():
            await swap.execute(
                "SELECT 1 FROM projection_positions WHERE name = any($1) FOR UPDATE", names
            )
            projecting = asyncio.create_task(
                catch_up(isolated_db.store, projections, left_at=left_at)
            )
            async with asyncio.timeout(30):
                while not await isolated_db.pool.fetchval(
                    """SELECT count(*) FROM pg_stat_activity
                       WHERE wait_event_type = 'Lock' AND datname = current_database()"""
                ):
                    if projecting.done():
                        # It read nothing: a transaction elsewhere on the server held the
                        # watermark back for a moment (settled()); what it reads it waits for.
                        assert projecting.result() == 0, projecting
                        projecting = asyncio.create_task(
                            catch_up(isolated_db.store, projections, left_at=left_at)
                        )
                    await asyncio.sleep(0.01)
            await swap.execute("SET LOCAL lock_timeout = '5s'")
            await swap.execute(
                f"LOCK TABLE {', '.join(p.table for p in projections)} IN ACCESS EXCLUSIVE MODE"
            )
        applied = await asyncio.wait_for(projecting, 30)

    assert applied == len(projections)  # the new account's opening, once for each view
    balances = "SELECT account_id FROM balances ORDER BY account_id"
    assert [r["account_id"] for r in await isolated_db.pool.fetch(balances)] == [
        account_id,
        "acct_peek_late",
    ]
    assert set(await positions(isolated_db)) == set(names)
    assert set(left_at) == set(names)


async def test_a_catch_up_stops_at_a_batch_short_of_its_size(isolated_db: IsolatedDatabase) -> None:
    """Such a batch read everything visible then: a read after it would find nothing (what
    commits later is announced, and wakes the projector)."""
    ledger = isolated_db.ledger()
    await opened(isolated_db, 1)
    left_at: dict[str, tuple[int, int]] = {}
    projections = all_projections(remembering=True)
    await caught_up(isolated_db.store, projections=projections, left_at=left_at)
    for n in range(3):  # an event each, each its own append
        await open_account(ledger, f"acct_short_{n}", 100)
    await settled(isolated_db.store)
    reads: list[str] = []
    pool = await create_pool(isolated_db.url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as connection:  # the pool's only connection
            connection.add_query_logger(
                lambda record: (
                    reads.append(record.query) if "FROM stored_events" in record.query else None
                )
            )
        applied = await catch_up(EventStore(pool), projections, batch_size=2, left_at=left_at)
        await asyncio.sleep(0)  # the logger is called soon after each query
    finally:
        await pool.close()

    assert applied == 3 * len(projections)
    assert len(reads) == 2, reads  # two events, then one: none to find nothing
    head = await isolated_db.store.head_position()
    assert await positions(isolated_db) == dict.fromkeys(left_at, head)


async def test_a_view_rewritten_at_the_same_position_is_read_again_not_remembered(
    isolated_db: IsolatedDatabase,
) -> None:
    """Another writer (a rebuild's swap) may rewrite a view and leave its position where it
    was: the position row's xmin tells, and the next batch builds on the rows as that
    writer left them, not on what this projector remembers."""
    ledger = isolated_db.ledger()
    (account_id,) = await opened(isolated_db, 1)
    left_at: dict[str, tuple[int, int]] = {}
    projections = all_projections(remembering=True)
    await caught_up(isolated_db.store, projections=projections, left_at=left_at)
    before = await positions(isolated_db)
    remaining = "SELECT allowance_remaining FROM balances WHERE account_id = $1"
    assert await isolated_db.pool.fetchval(remaining, account_id) == 100
    async with isolated_db.pool.acquire() as other, other.transaction():
        await other.execute(
            "UPDATE balances SET allowance_remaining = 70 WHERE account_id = $1", account_id
        )
        await other.execute("UPDATE projection_positions SET position = position")
    assert await positions(isolated_db) == before
    await ledger.execute(
        SpendCredits(account_id=account_id, amount=10, reason="test", idempotency_key="k")
    )

    assert await caught_up(isolated_db.store, projections=projections, left_at=left_at) == len(
        projections
    )

    assert await isolated_db.pool.fetchval(remaining, account_id) == 60  # 70, not 100, less 10


async def views_at(isolated_db: IsolatedDatabase, position: int, view: str | None = None) -> bool:
    """Whether every view (or ``view``) is at ``position``."""
    found = await positions(isolated_db)
    return (found[view] == position) if view else set(found.values()) == {position}


async def test_a_view_reset_by_hand_on_a_quiet_store_is_caught_up(
    isolated_db: IsolatedDatabase,
) -> None:
    """No event comes to show the running projector that a view moved (its short road
    reads the events after where it left them, and finds none): its poll looks at the
    positions."""
    await opened(isolated_db, 3)
    await settled(isolated_db.store)
    head = await isolated_db.store.head_position()
    stop = asyncio.Event()
    projector = Projector(isolated_db.store, isolated_db.url)
    running = asyncio.create_task(projector.run(stop))
    try:
        await until(lambda: views_at(isolated_db, head), 30)
        await asyncio.sleep(3 * POLL_SECONDS)  # polls that find the views as it left them
        assert {position for position, _ in projector._left_at.values()} == {head}  # kept
        async with isolated_db.pool.acquire() as connection, connection.transaction():
            await connection.execute("TRUNCATE statement_lines")
            await connection.execute(
                "UPDATE projection_positions SET position = 0 WHERE name = 'statement'"
            )
        await until(lambda: views_at(isolated_db, head, "statement"), 10 * POLL_SECONDS)
    finally:
        stop.set()
        await running
    assert await isolated_db.pool.fetchval("SELECT count(*) FROM statement_lines") == 3


async def listening_pids(isolated_db: IsolatedDatabase) -> set[int]:
    """The backends of this database that LISTEN for new events (seen as the projector's
    role, the database's administrator: the service's role sees no other role's query)."""
    admin = await asyncpg.connect(isolated_db.url)
    try:
        rows = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = $1",
            f'LISTEN "{NOTIFY_CHANNEL}"',
        )
    finally:
        await admin.close()
    return {row["pid"] for row in rows}


async def terminate(isolated_db: IsolatedDatabase, pid: int) -> None:
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def test_the_projector_listens_again_after_its_connection_is_cut_off(
    isolated_db: IsolatedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PostgreSQL restart, a failover or a terminated backend closes the connection the
    projector LISTENs on. It never listened again: every view was then a poll (0.5 s)
    behind each write until the process restarted, so a read right after a spend showed
    the balance before it."""
    monkeypatch.setattr(wakeups, "RELISTEN_SECONDS", 0.05, raising=False)
    await opened(isolated_db, 1)
    stop = asyncio.Event()
    running = asyncio.create_task(Projector(isolated_db.store, isolated_db.url).run(stop))
    try:
        await until(lambda: listening_pids(isolated_db), 30, what="the projector's LISTEN")
        [first] = await listening_pids(isolated_db)
        await terminate(isolated_db, first)

        async def listens_again() -> bool:
            return bool((await listening_pids(isolated_db)) - {first})

        await until(listens_again, 30, what="the projector's LISTEN after the kill")
        await open_account(isolated_db.ledger(), "acct_after_the_kill", 100)
        head = await isolated_db.store.head_position()
        await until(lambda: views_at(isolated_db, head), 30, what="the views after the kill")
    finally:
        stop.set()
        await running


async def test_a_projector_failing_every_poll_says_so_once_and_when_it_recovers(
    isolated_db: IsolatedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """Each poll (twice a second) logged "projector could not apply a batch (will retry)"
    again for as long as the failure lasted, and nothing when it ended."""
    await opened(isolated_db, 1)
    admin = await asyncpg.connect(isolated_db.url)

    def said(level: int) -> list[str]:
        ours = [r for r in caplog.records if r.name == "projections.runner"]
        return [r.getMessage() for r in ours if r.levelno == level]

    caplog.set_level(logging.DEBUG, logger="projections.runner")
    await admin.execute("ALTER TABLE stored_events RENAME TO stored_events_away")
    stop = asyncio.Event()
    running = asyncio.create_task(Projector(isolated_db.store, isolated_db.url).run(stop))
    try:
        await until(
            lambda: len([m for m in said(logging.DEBUG) if "(will retry)" in m]) >= 3,
            30,
            what="three failed polls",
        )
        await admin.execute("ALTER TABLE stored_events_away RENAME TO stored_events")
        await until(
            lambda: any("recovered" in m for m in said(logging.WARNING)), 30, what="recovery"
        )
    finally:
        stop.set()
        await running
        await admin.execute("ALTER TABLE IF EXISTS stored_events_away RENAME TO stored_events")
        await admin.close()

    failed, recovered = said(logging.WARNING)
    assert failed.startswith("projector could not apply a batch (will retry): "), failed
    assert '"stored_events" does not exist' in failed
    assert failed.endswith("; said again every 10 minutes while it lasts")
    assert recovered.startswith("projector recovered: "), recovered
