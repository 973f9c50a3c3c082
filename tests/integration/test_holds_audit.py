"""Holds (and the alerts' copy of the buckets) in the views and in ``ledger audit verify``."""

from __future__ import annotations

import asyncio

from audit.verify import verify
from ledger.accounts import AccountService, SpendCredits
from ledger.holds import HoldService, PlaceHold
from ledger.repository import Repository
from ledger.store.idempotency import IdempotencyStore
from projections.queries import Views
from projections.runner import all_projections, catch_up
from tests.conftest import IsolatedDatabase


async def holds_history(db: IsolatedDatabase) -> HoldService:
    """Holds captured, released and expired, and one open across a monthly reset."""
    repository = Repository(db.store)
    accounts = AccountService(repository, db.store, IdempotencyStore(db.pool))
    holds = HoldService(accounts)
    await accounts.open("acct_holds", 1000)

    def hold(key: str, amount: int, seconds: int = 600) -> PlaceHold:
        return PlaceHold("acct_holds", amount, seconds, f"job {key}", key)

    captured = await holds.place(hold("a", 300))
    released = await holds.place(hold("b", 200))
    expiring = await holds.place(hold("c", 100, seconds=1))
    carried = await holds.place(hold("d", 250))
    await accounts.spend(SpendCredits("acct_holds", 50, "call", "spend-1"))
    await holds.capture("acct_holds", captured.hold_id, 120)
    await holds.release("acct_holds", released.hold_id)
    await accounts.reset_month("acct_holds", "2099-01")
    await holds.capture("acct_holds", carried.hold_id, 200)
    await asyncio.sleep(1.05)
    assert await holds.expire("acct_holds", expiring.hold_id) is not None
    return holds


async def test_views_and_the_audit_agree_with_the_replay_of_holds(
    isolated_db: IsolatedDatabase,
) -> None:
    await holds_history(isolated_db)
    await catch_up(isolated_db.store, all_projections())

    report = await verify(isolated_db.pool)
    row = await Views(isolated_db.pool).balance("acct_holds")

    assert report.findings == []
    assert row is not None
    # After the reset the plan's 1,000 are free; the carried hold spent 200 of its 250.
    assert (row.allowance_remaining, row.topup_balance, row.held, row.available) == (
        1000,
        0,
        0,
        1000,
    )
    statement = await Views(isolated_db.pool).statement("acct_holds", limit=100)
    assert statement[0].balance_after == 1000
    assert statement[0].type == "HoldExpired"  # placed before the reset: carried over
    assert statement[0].description.startswith("Hold expired: 0 credits back")
    assert statement[0].description.endswith("100 of last period's allowance lapsed")
    assert statement[1].description.endswith("50 of last period's allowance lapsed")
    statuses = dict(
        await isolated_db.pool.fetch("SELECT reason, status FROM holds ORDER BY reason")
    )
    assert statuses == {
        "job a": "captured",
        "job b": "released",
        "job c": "expired",
        "job d": "captured",
    }


async def test_the_audit_finds_a_holds_view_that_disagrees(isolated_db: IsolatedDatabase) -> None:
    await holds_history(isolated_db)
    await catch_up(isolated_db.store, all_projections())
    await isolated_db.pool.execute("UPDATE holds SET status = 'held' WHERE reason = 'job b'")
    await isolated_db.pool.execute("UPDATE balances SET held = 7")
    await isolated_db.pool.execute("UPDATE notifier_accounts SET threshold = 5")

    report = await verify(isolated_db.pool)

    kinds = sorted(f.kind for f in report.findings)
    assert kinds == ["balances-view", "holds-view", "notifications-view"]
    assert "threshold is 5 in the view, None replayed" in " ".join(
        f.detail for f in report.findings
    )
    assert "is held in the view, released replayed" in " ".join(f.detail for f in report.findings)
