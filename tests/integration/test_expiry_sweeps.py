"""The expiry sweeper against views that lag behind the store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from api import expiry
from api.expiry import ExpirySweeper
from ledger.bootstrap import build_ledger
from ledger.commands import GrantCredits, PlaceHold
from projections.queries import Views
from tests.conftest import IsolatedDatabase
from tests.support.events import caught_up
from tests.support.ledger import open_account


async def test_a_full_batch_of_expiries_the_views_still_show_due_ends_the_sweep(
    isolated_db: IsolatedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second sweep of holds whose expiry is recorded, but not yet projected, is answered
    from their settlements' claims: those answers are not expiries recorded now. Counted as
    such, a full batch of them swept again and again until the projector caught up (without
    it, for ever), and the grants due waited behind."""
    monkeypatch.setattr(expiry, "SWEEP_BATCH", 3)
    books = build_ledger(isolated_db.pool)
    await open_account(books, "acct_sweeps", 1000)
    for n in range(4):
        await books.execute(
            PlaceHold(
                account_id="acct_sweeps",
                amount=10,
                expires_in_seconds=1,
                reason="",
                idempotency_key=f"h{n}",
            )
        )
    await books.execute(
        GrantCredits(
            account_id="acct_sweeps",
            amount=50,
            priority=50,
            expires_at=datetime.now(UTC) + timedelta(seconds=1),
            reason="",
            idempotency_key="g",
        )
    )
    await caught_up(isolated_db.store)
    await asyncio.sleep(1.05)

    try:
        swept = await asyncio.wait_for(ExpirySweeper(Views(isolated_db.pool), books).sweep(), 10)
    finally:
        await books.uow.committer.stop()

    # The fourth hold waits for the views to show the first three expired.
    assert swept == {"holds": 3, "grants": 1}
    account = await books.account("acct_sweeps", fresh=True)
    assert (len(account.holds), account.granted) == (1, 0)
