"""Reasons with a NUL character: the domain refuses them, and the views keep those already
recorded (PostgreSQL's text holds no NUL: one such reason stopped every view)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.database import owner_connection
from audit.verify import verify
from ledger.commands import GrantCredits, PlaceHold, SpendCredits, VoidGrant
from ledger.domain.account import CreditAccount
from ledger.domain.errors import InvalidReason
from ledger.domain.events import CreditsGranted, CreditsSpent, HoldPlaced
from ledger.domain.ids import account_stream_id
from projections.queries import Views
from projections.rebuild import rebuild_all
from projections.runner import all_projections
from tests.conftest import IsolatedDatabase, unique
from tests.support.events import caught_up
from tests.support.ledger import open_account, save
from tests.support.waiting import until

NOW = datetime.now(UTC)


def commands(account_id: str, grant_id: str) -> list[Any]:
    return [
        SpendCredits(account_id=account_id, amount=1, reason="a\x00b", idempotency_key="s"),
        PlaceHold(
            account_id=account_id,
            amount=1,
            expires_in_seconds=60,
            reason="\x00",
            idempotency_key="h",
        ),
        GrantCredits(
            account_id=account_id,
            amount=1,
            priority=50,
            expires_at=None,
            reason="x\x00",
            idempotency_key="g",
        ),
        VoidGrant(account_id=account_id, grant_id=grant_id, reason="\x00no"),
    ]


@pytest.mark.parametrize("which", range(4))
async def test_the_domain_refuses_a_reason_with_a_nul(
    isolated_db: IsolatedDatabase, which: int
) -> None:
    books = isolated_db.ledger()
    try:
        account_id = unique("acct")
        await open_account(books, account_id, 100)
        granted = await books.execute(
            GrantCredits(
                account_id=account_id,
                amount=5,
                priority=50,
                expires_at=None,
                reason="promo",
                idempotency_key="first",
            )
        )
        stream = account_stream_id(account_id)
        before = len(await isolated_db.store.load(stream))

        with pytest.raises(InvalidReason, match="NUL"):
            await books.execute(commands(account_id, str(granted.grant_id))[which])

        assert len(await isolated_db.store.load(stream)) == before
    finally:
        await books.uow.committer.stop()


async def test_the_views_keep_reasons_recorded_with_a_nul_and_go_on(
    isolated_db: IsolatedDatabase,
) -> None:
    books = isolated_db.ledger()
    try:
        account_id, later = unique("acct"), unique("acct")
        await open_account(books, account_id, 100)
        account: CreditAccount = await books.account(account_id, fresh=True)
        # As recorded before the domain checked reasons (event states are bytes).
        account.trigger_event(
            CreditsSpent, amount=1, from_allowance=1, from_topup=0, reason="a\x00b", from_grants={}
        )
        account.trigger_event(
            HoldPlaced,
            hold_id="hold_nul",
            amount=2,
            from_allowance=2,
            from_topup=0,
            reason="\x00",
            expires_at=(NOW + timedelta(hours=1)).isoformat(),
            from_grants={},
        )
        account.trigger_event(
            CreditsGranted,
            grant_id="grant_nul",
            amount=3,
            priority=50,
            expires_at=None,
            reason="x\x00",
        )
        await save(books, account)
        await open_account(books, later, 100)  # an account after them, for the views to reach

        await caught_up(isolated_db.store)

        views = Views(isolated_db.pool)
        assert (await views.balance(later)) is not None
        lines = await views.statement(account_id, limit=10)
        assert [line.description for line in lines][:3] == [
            "Granted 3 (grant_nul): x\ufffd",
            "2 credits held (hold_nul)",
            "a\ufffdb",
        ]
        hold_reason = await isolated_db.pool.fetchval(
            "SELECT reason FROM holds WHERE hold_id = 'hold_nul'"
        )
        assert hold_reason == "\ufffd"
        (grant,) = await views.grants(account_stream_id(account_id), "all", limit=10)
        assert grant.reason == "x\ufffd"

        head = await isolated_db.store.head_position()

        async def rebuilt_to_the_head() -> bool:
            # A rebuild stops at its look's watermark, which a transaction of another
            # database can hold short of the last event for a moment: then again.
            async with owner_connection(isolated_db.url) as connection:
                await rebuild_all(connection, all_projections(), lambda *_: None)
            return (
                await isolated_db.pool.fetchval("SELECT min(position) FROM projection_positions")
                == head
            )

        await until(rebuilt_to_the_head, what=f"a rebuild up to position {head}")
        assert await views.statement(account_id, limit=10) == lines
        report = await verify(isolated_db.pool)
        assert report.ok, report.findings
    finally:
        await books.uow.committer.stop()
