"""``rebuild_all`` split over processes leaves the views exactly as one pass does."""

from __future__ import annotations

from typing import Any

import pytest

import projections.rebuild
from api.database import owner_connection
from ledger.bootstrap import build_ledger
from ledger.commands import SetLowBalanceThreshold, SpendCredits
from ledger.notifications import EVENT_TYPES
from ledger.notifications.endpoints import EndpointRegistry
from projections.rebuild import rebuild_all
from projections.runner import all_projections
from tests.conftest import IsolatedDatabase
from tests.integration.test_audit import build_history
from tests.integration.test_grants_views_and_audit import grants_history
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
    books = build_ledger(database.pool)
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
    applied = 0

    def count(events: int, _: int) -> None:
        nonlocal applied
        applied += events

    async with owner_connection(database.url) as connection:
        await rebuild_all(
            connection, all_projections(), count, jobs=jobs, database_url=database.url
        )
    assert applied == await database.pool.fetchval("SELECT count(*) FROM stored_events")
    return await view_rows(database)


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
