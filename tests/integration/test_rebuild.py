"""``rebuild_all`` split over processes leaves the views exactly as one pass does."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

import projections.notifications
import projections.rebuild
from api.database import owner_connection
from ledger.commands import SetLowBalanceThreshold, SpendCredits
from ledger.notifications import EVENT_TYPES
from ledger.notifications.endpoints import EndpointRegistry
from ledger.store.hash_chain import postgres_microseconds
from ledger.store.migrate import available_migrations
from projections.events import times_as_microseconds
from projections.rebuild import rebuild_all
from projections.runner import all_projections
from tests.conftest import IsolatedDatabase
from tests.integration.test_audit import build_history
from tests.integration.test_grants_views_and_audit import grants_history
from tests.support import cli
from tests.support.events import caught_up
from tests.support.ledger import open_account

VIEW_TABLES = (
    "balances",
    "purchases",
    "statement_lines",
    "holds",
    "grants",
    "notifier_accounts",
    "webhook_deliveries",
    "projection_positions",
)


async def many_accounts(database: IsolatedDatabase, count: int) -> None:
    """Small accounts that go low and run dry, so the alerts fire in every part."""
    books = database.ledger()
    for n in range(count):
        account_id = f"acct_many_{n}"
        await open_account(books, account_id, 100)
        await books.execute(SetLowBalanceThreshold(account_id=account_id, threshold=30 + n))
        for k, amount in enumerate((40, 35, 25)):
            await books.execute(
                SpendCredits(
                    account_id=account_id, amount=amount, reason="job", idempotency_key=f"{n}-{k}"
                )
            )
    await books.uow.committer.stop()


async def view_rows(database: IsolatedDatabase) -> dict[str, list[Any]]:
    columns = {
        # The rebuild adds no delivery, and its moving the positions is what counts.
        "webhook_deliveries": "notification_id, endpoint_id, payload",
        "projection_positions": "name, position",
    }
    rows = {}
    for table in VIEW_TABLES:
        found = await database.pool.fetch(f"SELECT {columns.get(table, '*')} FROM {table}")
        rows[table] = sorted(tuple(r) for r in found)
    return rows


async def rebuilt(database: IsolatedDatabase, jobs: int) -> dict[str, list[Any]]:
    """The views' rows after a rebuild of every event. A rebuild reads up to its look's
    watermark, which a transaction of another database that ends between the look's
    snapshot and its read of the sessions holds short of the last event for a moment:
    one that stopped short of it is run again."""
    events = await database.pool.fetchval("SELECT count(*) FROM stored_events")
    for _ in range(10):
        applied = 0

        def count(done: int, _: int) -> None:
            nonlocal applied
            applied += done

        async with owner_connection(database.url) as connection:
            await rebuild_all(
                connection, all_projections(), count, jobs=jobs, database_url=database.url
            )
        assert applied <= events
        if applied == events:
            return await view_rows(database)
    raise AssertionError(f"no rebuild of 10 applied all {events} events")


async def test_a_rebuild_in_two_processes_leaves_the_same_rows_as_one_pass(
    isolated_db: IsolatedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        "http://127.0.0.1:9/hook", sorted(EVENT_TYPES)
    )
    await build_history(isolated_db)  # purchases, a refund, a dispute, a reset
    await grants_history(isolated_db)  # grants, a hold captured across an expiry
    await many_accounts(isolated_db, 12)
    await caught_up(isolated_db.store)
    live = await view_rows(isolated_db)

    in_one_pass = await rebuilt(isolated_db, jobs=1)
    in_parts = await rebuilt(isolated_db, jobs=2)
    in_one_pass_again = await rebuilt(isolated_db, jobs=1)
    # Batches far smaller than the history: every row is carried from batch to batch.
    monkeypatch.setattr(projections.rebuild, "REBUILD_BATCH", 7)
    in_small_batches = await rebuilt(isolated_db, jobs=1)
    in_parts_in_small_batches = await rebuilt(isolated_db, jobs=2)

    assert in_parts == in_one_pass == in_one_pass_again
    assert in_small_batches == in_parts_in_small_batches == in_one_pass
    assert in_parts["webhook_deliveries"] == live["webhook_deliveries"]  # nothing new to send
    for table in (
        "balances",
        "purchases",
        "statement_lines",
        "holds",
        "grants",
        "notifier_accounts",
    ):
        assert in_parts[table] == live[table], table
    assert len(in_parts["statement_lines"]) > 12 * 4


@pytest.mark.parametrize("jobs", [1, 2])
async def test_the_views_a_rebuild_swaps_in_come_with_their_statistics(
    isolated_db: IsolatedDatabase, jobs: int
) -> None:
    await many_accounts(isolated_db, 3)

    await rebuilt(isolated_db, jobs=jobs)

    counted = await isolated_db.pool.fetch(
        "SELECT relname, reltuples FROM pg_class WHERE relname = any($1) AND relkind = 'r'",
        [p.table for p in all_projections()],
    )
    assert {row["relname"]: row["reltuples"] >= 0 for row in counted} == dict.fromkeys(
        (p.table for p in all_projections()), True
    )  # -1: never analyzed
    assert {row["relname"]: row["reltuples"] for row in counted}["statement_lines"] == 3 * 4


@pytest.mark.parametrize("jobs", [1, 2])
async def test_views_a_short_fill_left_to_the_swap_come_with_their_statistics_too(
    isolated_db: IsolatedDatabase, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    """The fill stops at its look's watermark; what it did not reach, the swap applies. The
    tables were analyzed between the two, so a fill that stopped short (a transaction
    begun before the events, running then) swapped them in with the statistics of empty
    tables. Here a transaction of this database, begun first, ends once the fill is done.
    (The swap's own look can stop short as well, in the watermark's race: the statistics
    are compared with the rows swapped in, whatever their number.)"""
    older = await isolated_db.pool.acquire()
    transaction = older.transaction()
    await transaction.start()
    ended = []
    try:
        await older.fetchval("SELECT pg_current_xact_id()")  # a writer: it has an id
        await many_accounts(isolated_db, 3)
        name = "fill_in_parts" if jobs > 1 else "_fill"
        fill = getattr(projections.rebuild, name)

        async def fill_then_end_the_older_one(*args: Any, **kwargs: Any) -> int:
            position: int = await fill(*args, **kwargs)
            filled.append(sum(applied))
            await transaction.rollback()
            ended.append(True)
            return position

        monkeypatch.setattr(projections.rebuild, name, fill_then_end_the_older_one)
        applied: list[int] = []
        filled: list[int] = []
        async with owner_connection(isolated_db.url) as connection:
            await rebuild_all(
                connection,
                all_projections(),
                lambda events, _: applied.append(events),
                jobs=jobs,
                database_url=isolated_db.url,
            )
    finally:
        if not ended:
            await transaction.rollback()
        await isolated_db.pool.release(older)

    assert filled == [0]  # the older transaction held the fill before every event
    reltuples = await isolated_db.pool.fetchval(
        "SELECT reltuples FROM pg_class WHERE relname = 'statement_lines' AND relkind = 'r'"
    )
    assert reltuples == await isolated_db.pool.fetchval("SELECT count(*) FROM statement_lines")


async def test_a_rebuild_sends_nothing_again_of_deliveries_pruned_by_retention(
    isolated_db: IsolatedDatabase,
) -> None:
    # Operators prune old deliveries (docs/notifications.md, "Retention"): what the live
    # view made of an event is never made again, whether or not its row is kept.
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        "http://127.0.0.1:9/hook", sorted(EVENT_TYPES)
    )
    await many_accounts(isolated_db, 3)
    await caught_up(isolated_db.store)
    assert await isolated_db.pool.fetchval("SELECT count(*) FROM webhook_deliveries") > 0
    async with owner_connection(isolated_db.url) as connection:
        await connection.execute("DELETE FROM webhook_deliveries")

    for jobs in (1, 2):
        after = await rebuilt(isolated_db, jobs=jobs)
        assert after["webhook_deliveries"] == [], jobs

    books = isolated_db.ledger()  # the live view still delivers what comes next
    await open_account(books, "acct_after_pruning", 100)
    await books.execute(
        SpendCredits(account_id="acct_after_pruning", amount=10, reason="job", idempotency_key="k")
    )
    await books.uow.committer.stop()
    await caught_up(isolated_db.store)
    assert await isolated_db.pool.fetchval("SELECT count(*) FROM webhook_deliveries") > 0


async def index_names(database: IsolatedDatabase) -> list[tuple[str, ...]]:
    found = await database.pool.fetch(
        """SELECT t.relname, c.relname, pg_get_indexdef(i.indexrelid),
                  coalesce(k.conname, '')
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           JOIN pg_class t ON t.oid = i.indrelid
           LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid
           WHERE t.relname = any($1) ORDER BY 1, 2""",
        list(VIEW_TABLES),
    )
    return [tuple(row) for row in found]


async def test_a_rebuild_keeps_the_views_indexes_under_the_names_the_migrations_gave(
    isolated_db: IsolatedDatabase,
) -> None:
    await many_accounts(isolated_db, 2)
    await caught_up(isolated_db.store)
    before = await index_names(isolated_db)
    named = {name for _, name, _, _ in before}
    assert {"purchases_pending_by_creation", "grants_active_by_expiry"} <= named

    for jobs in (1, 2, 1):  # the names once drifted from rebuild to rebuild
        await rebuilt(isolated_db, jobs=jobs)
        assert await index_names(isolated_db) == before

    # An index of the same definition as a constraint's keeps its name, and the
    # constraint its own.
    async with owner_connection(isolated_db.url) as connection:
        await connection.execute(
            "CREATE UNIQUE INDEX balances_stream_id_too ON balances (stream_id)"
        )
    before = await index_names(isolated_db)
    await rebuilt(isolated_db, jobs=1)
    assert await index_names(isolated_db) == before


async def test_a_migration_gives_the_names_earlier_rebuilds_changed_back(
    isolated_db: IsolatedDatabase,
) -> None:
    before = await index_names(isolated_db)
    drift = {
        "balances_pkey": "balances__rebuild_pkey1",
        "purchases_pending_by_creation": "purchases__rebuild_created_at_idx1",
        "statement_lines_stream_id_version_key": "statement_lines__rebuild_stream_id_version_key",
        "holds_by_stream": "holds__rebuild_stream_id_position_idx1",
    }
    migration = next(sql for version, _, sql in available_migrations() if version == 18)
    async with owner_connection(isolated_db.url) as connection:
        for name, drifted in drift.items():
            await connection.execute(f"ALTER INDEX {name} RENAME TO {drifted}")
        assert await index_names(isolated_db) != before
        await connection.execute(migration)
    assert await index_names(isolated_db) == before


async def test_a_reader_of_two_views_is_never_the_deadlock_victim_of_a_swap(
    isolated_db: IsolatedDatabase,
) -> None:
    """A transaction that has read ``holds`` and then reads ``balances`` (the expiry sweep's
    query takes them in that order) while the swap takes the live tables: the swap lets go
    and tries again, so the reader gets its rows and the rebuild still ends right."""
    await many_accounts(isolated_db, 3)
    await caught_up(isolated_db.store)
    live = await view_rows(isolated_db)

    async with isolated_db.pool.acquire() as reader, reader.transaction():
        holds = await reader.fetchval("SELECT count(*) FROM holds")  # held until commit
        rebuilding = asyncio.create_task(rebuilt(isolated_db, jobs=1))
        async with asyncio.timeout(30):
            while not await isolated_db.pool.fetchval(
                """SELECT count(*) FROM pg_locks WHERE relation = 'holds'::regclass
                   AND mode = 'AccessExclusiveLock' AND NOT granted"""
            ):
                assert not rebuilding.done(), rebuilding
                await asyncio.sleep(0.01)
        # The swap holds balances now and waits for holds: this read closes the circle.
        balances = await reader.fetchval("SELECT count(*) FROM balances")

    assert (holds, balances) == (0, 3)
    assert await rebuilding == live


async def test_a_second_rebuild_at_once_is_refused_and_leaves_the_first_ones_tables(
    isolated_db: IsolatedDatabase,
) -> None:
    """Every rebuild fills tables of the same names: a second one dropped and re-created them
    under the first, which swapped in what it filled after that and said it had rebuilt
    everything (a projector review)."""
    await many_accounts(isolated_db, 2)
    async with owner_connection(isolated_db.url) as first:
        await first.execute("SELECT pg_advisory_lock($1)", projections.rebuild.REBUILD_LOCK)
        await first.execute("CREATE TABLE balances__rebuild (LIKE balances INCLUDING ALL)")
        async with owner_connection(isolated_db.url) as second:
            with pytest.raises(projections.rebuild.RebuildRunning, match="another"):
                await rebuild_all(second, all_projections(), lambda *_: None)
        filling = await first.fetchval("SELECT to_regclass('balances__rebuild') IS NOT NULL")
        await first.execute("DROP TABLE balances__rebuild")
        await first.execute("SELECT pg_advisory_unlock($1)", projections.rebuild.REBUILD_LOCK)

    assert filling
    await rebuilt(isolated_db, jobs=1)  # and once the first has ended, a rebuild runs


async def test_a_rebuild_from_the_start_makes_the_deliveries_the_live_view_made(
    isolated_db: IsolatedDatabase,
) -> None:
    """A rebuild folds the times PostgreSQL keeps, not datetimes (projections/events.py,
    ``Moment``): its deliveries carry the same ``created``, and go to the endpoints made
    before their events only, as the live view's."""
    registry = EndpointRegistry(isolated_db.pool, allow_private=True)
    await registry.create("http://127.0.0.1:9/early", sorted(EVENT_TYPES))
    await build_history(isolated_db)
    await registry.create("http://127.0.0.1:9/late", sorted(EVENT_TYPES))
    await many_accounts(isolated_db, 3)
    await caught_up(isolated_db.store)
    live = (await view_rows(isolated_db))["webhook_deliveries"]
    per_endpoint = Counter(endpoint_id for _, endpoint_id, _ in live)
    assert len(per_endpoint) == 2
    assert len(set(per_endpoint.values())) == 2  # the late endpoint's: fewer

    for jobs in (1, 2):
        async with owner_connection(isolated_db.url) as connection:
            await connection.execute("DELETE FROM webhook_deliveries")
            await connection.execute(
                "UPDATE projection_positions SET position = 0 WHERE name = 'notifications'"
            )
        assert (await rebuilt(isolated_db, jobs=jobs))["webhook_deliveries"] == live, jobs


async def test_a_rebuild_builds_no_notification_of_events_the_live_view_delivered(
    isolated_db: IsolatedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their deliveries are made already (and kept out by the view's insert): a rebuild with
    a subscriber built each one of them for nobody, more than doubling its cost an event."""
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        "http://127.0.0.1:9/hook", sorted(EVENT_TYPES)
    )
    await many_accounts(isolated_db, 3)
    await caught_up(isolated_db.store)
    live = await view_rows(isolated_db)
    assert live["webhook_deliveries"]
    built: list[str] = []
    made_id = projections.notifications.notification_id

    def counted(position: int, event_type: str) -> str:
        built.append(event_type)
        return made_id(position, event_type)

    monkeypatch.setattr(projections.notifications, "notification_id", counted)
    assert await rebuilt(isolated_db, jobs=1) == live
    assert built == []


async def test_a_subscriber_to_some_types_has_nothing_built_of_the_others(
    isolated_db: IsolatedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event's own notification of a type no endpoint wants was built, details and all,
    for the live view to drop it: the alerts still arm and fire, and what is delivered is
    what a subscriber to every type is sent of them."""
    alerts = ["credits.depleted", "credits.low_balance"]
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        "http://127.0.0.1:9/hook", alerts
    )
    built: list[str] = []
    own_notification = projections.notifications._own_notification

    def counted(*args: Any) -> Any:
        own = own_notification(*args)
        if own is not None:
            built.append(own[0])
        return own

    monkeypatch.setattr(projections.notifications, "_own_notification", counted)
    await many_accounts(isolated_db, 3)  # spends, each low and then depleted
    await caught_up(isolated_db.store)
    live = await view_rows(isolated_db)
    assert built == []
    ids = [notification_id for notification_id, _, _ in live["webhook_deliveries"]]
    assert Counter(i.split("_", 2)[2] for i in ids) == {
        "credits_depleted": 3,
        "credits_low_balance": 3,
    }

    # The same events folded for a subscriber to every type, building each notification.
    monkeypatch.undo()
    async with owner_connection(isolated_db.url) as connection:
        await connection.execute(
            "UPDATE webhook_endpoints SET event_types = $1", sorted(EVENT_TYPES)
        )
        await connection.execute("DELETE FROM webhook_deliveries")
        await connection.execute(
            "UPDATE projection_positions SET position = 0 WHERE name = 'notifications'"
        )
    every = await rebuilt(isolated_db, jobs=1)
    assert every["webhook_deliveries"] != live["webhook_deliveries"]  # the spends' too
    every["webhook_deliveries"] = [
        row for row in every["webhook_deliveries"] if row[0].endswith(("_depleted", "_balance"))
    ]
    assert every == live


async def test_a_rebuilds_connection_reads_and_writes_times_as_postgres_keeps_them(
    isolated_db: IsolatedDatabase,
) -> None:
    connection = await asyncpg.connect(isolated_db.url)
    try:
        await connection.execute("CREATE TEMP TABLE times (at timestamptz)")
        async with times_as_microseconds(connection):
            await connection.copy_records_to_table("times", records=[(0,), (1_000_000,)])
            await connection.execute(
                "INSERT INTO times SELECT * FROM unnest($1::timestamptz[])", [-1]
            )
            found = await connection.fetch("SELECT at FROM times ORDER BY at")
            assert [row["at"] for row in found] == [-1, 0, 1_000_000]
            assert await connection.fetchval("SELECT 'infinity'::timestamptz") == 2**63 - 1
        second = datetime(2000, 1, 1, 0, 0, 1, tzinfo=UTC)
        assert await connection.fetchval("SELECT max(at) FROM times") == second
    finally:
        await connection.close()


async def test_a_rebuilds_connection_reads_times_before_2000_and_infinities_as_ints(
    isolated_db: IsolatedDatabase,
) -> None:
    """A rebuild's and an audit's replay: asyncpg's int8 codec, infinities as the int8's ends;
    datetimes again after."""
    connection = await asyncpg.connect(isolated_db.url)
    try:
        await connection.execute("CREATE TEMP TABLE times (at timestamptz)")
        await connection.execute(
            """INSERT INTO times VALUES ('1999-12-31 23:59:59.999999Z'), ('2000-01-01Z'),
               ('2026-11-05 12:34:56.789012Z'), ('infinity'), ('-infinity')"""
        )
        query = "SELECT at FROM times ORDER BY at"
        async with times_as_microseconds(connection):
            found = [row["at"] for row in await connection.fetch(query)]
            at_second = await connection.fetchval("SELECT $1::timestamptz", 1_000_000)
        later = postgres_microseconds(datetime(2026, 11, 5, 12, 34, 56, 789012, tzinfo=UTC))
        assert found == [-(2**63), -1, 0, later, 2**63 - 1]
        assert at_second == 1_000_000
        assert await connection.fetchval("SELECT min(at) FROM times WHERE at > '-infinity'") == (
            datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
        )
    finally:
        await connection.close()


async def test_a_rebuilds_workers_import_what_they_fold_with_and_not_the_command_line(
    isolated_db: IsolatedDatabase,
) -> None:
    """A spawned worker ran the parent's main module again before its part: the command
    line's, every command's module with click, 0.07-0.1 s of its start."""
    books = isolated_db.ledger()
    await open_account(books, "acct_rebuild_imports", 1000)
    await caught_up(isolated_db.store)
    await books.uow.committer.stop()

    rebuilt = await cli.ledger(
        isolated_db.url,
        *("projections", "rebuild", "--jobs", "2"),
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )

    assert rebuilt.returncode == 0, rebuilt.stderr
    assert cli.imported(rebuilt.stderr, "projections.rebuild_parts") == 3  # the command, 2 workers
    assert cli.imported(rebuilt.stderr, "click") == 1  # the command alone
