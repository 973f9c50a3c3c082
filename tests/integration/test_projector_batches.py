"""The projector asks first whether any view has an event to apply (projections/runner.py):
one round trip, where the batch's transaction took six to find nothing."""

from __future__ import annotations

from ledger.bootstrap import build_ledger
from projections.runner import all_projections, apply_batch
from tests.conftest import IsolatedDatabase
from tests.support.events import caught_up
from tests.support.ledger import open_account


async def opened(isolated_db: IsolatedDatabase, count: int) -> list[str]:
    ledger = build_ledger(isolated_db.pool)
    account_ids = [f"acct_peek_{n}" for n in range(count)]
    for account_id in account_ids:
        await open_account(ledger, account_id, 100)
    return account_ids


async def positions(isolated_db: IsolatedDatabase) -> dict[str, int]:
    rows = await isolated_db.pool.fetch("SELECT name, position FROM projection_positions")
    return {row["name"]: row["position"] for row in rows}


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

    applied = await apply_batch(isolated_db.store, all_projections())

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

    applied = await apply_batch(isolated_db.store, all_projections())

    assert applied["statement"] == 3
    assert sum(applied.values()) == 3


async def opened_more(isolated_db: IsolatedDatabase) -> None:
    await open_account(build_ledger(isolated_db.pool), "acct_peek_late", 100)
