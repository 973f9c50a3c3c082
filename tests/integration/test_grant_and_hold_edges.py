"""Grants, holds and resets at their edges, through the ledger's one road (a money review).

Each case tries to make, lose or double-apply credits where grants expire while holds
reserve them, resets come between a hold and its capture, expiries fall on the instant a
spend or balance read is decided, and one idempotency key is used for several kinds of
request. None broke the books; they are kept as the cases the property tests cover only
in the domain, here with the unit of work, the claims, the store and the audit.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import cast

import pytest

from api.routes.auditors import credits_as_of
from api.services import Services
from audit.verify import verify
from ledger.commands import (
    ExpireGrant,
    GrantCredits,
    PlaceHold,
    ResetMonth,
    SettleHold,
    SpendCredits,
    VoidGrant,
)
from ledger.domain.errors import (
    CaptureExceedsHold,
    GrantClosed,
    HoldAlreadySettled,
    InsufficientCredits,
)
from ledger.service import Ledger
from ledger.store.claims import IdempotencyKeyReused
from tests.conftest import IsolatedDatabase
from tests.integration.test_audit_adjustments_and_snapshots import dispute, pay, refund
from tests.support.events import caught_up
from tests.support.ledger import open_account
from tests.support.times import UNJUDGED

START = datetime(2999, 1, 10, 12, 0, tzinfo=UTC)


def grant(
    account_id: str, amount: int, key: str, *, priority: int = 50, expires_at: datetime | None
) -> GrantCredits:
    return GrantCredits(
        account_id=account_id,
        amount=amount,
        priority=priority,
        expires_at=expires_at,
        reason="",
        idempotency_key=key,
    )


def hold(account_id: str, amount: int, key: str, seconds: int) -> PlaceHold:
    return PlaceHold(
        account_id=account_id,
        amount=amount,
        expires_in_seconds=seconds,
        reason="",
        idempotency_key=key,
    )


def spend(account_id: str, amount: int, key: str) -> SpendCredits:
    return SpendCredits(account_id=account_id, amount=amount, reason="", idempotency_key=key)


def capture(account_id: str, hold_id: str, amount: int, key: str | None = None) -> SettleHold:
    return SettleHold(
        account_id=account_id,
        hold_id=hold_id,
        outcome="captured",
        amount=amount,
        idempotency_key=key,
    )


async def audited(db: IsolatedDatabase, books: Ledger) -> list[object]:
    """The audit's findings once the views have caught up, with the committer stopped."""
    await caught_up(db.store)
    report = await verify(db.pool, max_time_skew=UNJUDGED)
    return list(report.findings)


async def test_a_hold_on_a_grant_that_expired_before_a_reset_and_its_capture_spends_no_more(
    isolated_db: IsolatedDatabase,
) -> None:
    """Allowance 10 and a grant of 50 that expires in 10 minutes; a hold of 40 takes the 10
    and 30 of the grant. The grant expires, the month is reset, and the hold is captured:
    more than it holds is refused (and records nothing, not even the expiries), 15 spends
    the carried allowance share and 5 of the grant, and the other 25 of the grant lapse.
    The account ends as if 15 had been spent when the hold was placed: the new allowance."""
    now = [START]
    books = isolated_db.ledger(clock=lambda: now[0])
    try:
        await open_account(books, "acct_edge_1", 10)
        await books.execute(
            grant("acct_edge_1", 50, "g", priority=0, expires_at=START + timedelta(minutes=10))
        )
        placed = await books.execute(hold("acct_edge_1", 40, "h", 3600))
        now[0] = START + timedelta(minutes=20)
        await books.execute(ResetMonth(account_id="acct_edge_1", period="3000-01"))
        with pytest.raises(CaptureExceedsHold):
            await books.execute(capture("acct_edge_1", placed.hold_id, 41))
        captured = await books.execute(capture("acct_edge_1", placed.hold_id, 15))
        account = await books.account_now("acct_edge_1")
        findings = await audited(isolated_db, books)
    finally:
        await books.uow.committer.stop()

    assert (captured.captured, captured.released, captured.lapsed) == (15, 25, 25)
    assert (captured.balance, captured.available) == (10, 10)
    assert (account.allowance_remaining, account.granted, account.held) == (10, 0, 0)
    assert findings == []


async def test_a_spend_at_the_instant_a_hold_and_two_grants_expire_finds_them_all_ended(
    isolated_db: IsolatedDatabase,
) -> None:
    """Two grants of 30 expire at E, a third never does; a hold of 40 placed on the first two
    expires at E too. A microsecond before E, a spend takes what the hold leaves free of the
    second grant; at E the hold's shares come back and lapse with their grants, so only the
    third grant is left: 31 is refused, 30 is spent from it, and nothing is left over."""
    now = [START]
    books = isolated_db.ledger(clock=lambda: now[0])
    ends = START + timedelta(seconds=60)
    try:
        await open_account(books, "acct_edge_2", 0)
        for key, priority, expires_at in (("g1", 0, ends), ("g2", 1, ends), ("g3", 2, None)):
            await books.execute(
                grant("acct_edge_2", 30, key, priority=priority, expires_at=expires_at)
            )
        await books.execute(hold("acct_edge_2", 40, "h", 60))
        now[0] = ends - timedelta(microseconds=1)
        before = await books.execute(spend("acct_edge_2", 20, "s0"))
        now[0] = ends
        with pytest.raises(InsufficientCredits):
            await books.execute(spend("acct_edge_2", 31, "s1"))
        at_expiry = await books.execute(spend("acct_edge_2", 30, "s2"))
        findings = await audited(isolated_db, books)
    finally:
        await books.uow.committer.stop()

    assert (before.balance, before.held, before.available) == (70, 40, 30)
    assert list(before.from_grants.values()) == [20]  # of the second grant
    assert list(at_expiry.from_grants.values()) == [30]  # of the third
    assert (at_expiry.balance, at_expiry.held, at_expiry.granted) == (0, 0, 0)
    assert findings == []


async def test_one_key_for_a_grant_a_hold_its_capture_a_void_and_a_spend_applies_each_once(
    isolated_db: IsolatedDatabase,
) -> None:
    """Keys are per kind of request (and a capture's per hold): one key names a grant, a
    hold, the hold's capture, a void and a spend, each applied once. The same request again
    gets its first answer; another body under the key is refused (a hold, a spend: key
    reused; a settled hold's capture of another amount, with another key or none, and its
    release: already settled), and a repeat of a hold that has since settled still answers
    the hold, not a second one."""
    now = [START]
    books = isolated_db.ledger(clock=lambda: now[0])
    account_id = "acct_edge_3"
    try:
        await open_account(books, account_id, 100)
        given = await books.execute(grant(account_id, 50, "K", priority=0, expires_at=None))
        placed = await books.execute(hold(account_id, 30, "K", 60))
        with pytest.raises(IdempotencyKeyReused):
            await books.execute(hold(account_id, 31, "K", 60))
        captured = await books.execute(capture(account_id, placed.hold_id, 10, "K"))
        assert await books.execute(capture(account_id, placed.hold_id, 10, "K")) == captured
        for amount, key in ((11, "K"), (10, "K2"), (10, None)):
            with pytest.raises(HoldAlreadySettled):
                await books.execute(capture(account_id, placed.hold_id, amount, key))
        with pytest.raises(HoldAlreadySettled):
            await books.execute(
                SettleHold(
                    account_id=account_id,
                    hold_id=placed.hold_id,
                    outcome="released",
                    idempotency_key="K",
                )
            )
        assert await books.execute(hold(account_id, 30, "K", 60)) == placed
        void = VoidGrant(
            account_id=account_id, grant_id=given.grant_id, reason="", idempotency_key="K"
        )
        voided = await books.execute(void)
        assert await books.execute(void) == voided
        with pytest.raises((IdempotencyKeyReused, GrantClosed)):
            await books.execute(
                VoidGrant(
                    account_id=account_id,
                    grant_id=given.grant_id,
                    reason="another",
                    idempotency_key="K",
                )
            )
        spent = await books.execute(spend(account_id, 5, "K"))
        with pytest.raises(IdempotencyKeyReused):
            await books.execute(spend(account_id, 6, "K"))
        account = await books.account_now(account_id)
        findings = await audited(isolated_db, books)
    finally:
        await books.uow.committer.stop()

    # The hold took 30 of the allowance; 10 captured, the grant's 50 voided, 5 spent.
    assert (captured.balance, voided.lapsed, spent.balance) == (140, 50, 85)
    assert (account.balance, account.allowance_remaining, account.granted) == (85, 85, 0)
    assert findings == []


async def test_a_hold_captured_after_its_top_ups_were_refunded_and_disputed_owes_them(
    isolated_db: IsolatedDatabase,
) -> None:
    """1,000 credits bought, a hold of 600 on them and 300 spent; then 250 of the money is
    refunded and the other 750 charged back: every credit bought is taken back while the
    hold still reserves 600 (available -900). The capture of the 600 is allowed (work done
    on reserved credits) and leaves the account owing 900; the chargeback won gives its 750
    back. The account ends owing what it used beyond the money kept: 900 - 750 = 150."""
    books = isolated_db.ledger()
    account_id = "acct_edge_4"
    try:
        await open_account(books, account_id, 0)
        await pay(books, "cs_edge_4", account_id, 1000, "pi_edge_4")
        placed = await books.execute(hold(account_id, 600, "h", 3600))
        await books.execute(spend(account_id, 300, "s"))
        await refund(books, "pi_edge_4", 250)
        await dispute(books, "pi_edge_4", "dp_edge_4", "needs_response", 750)
        taken_back = await books.account_now(account_id)
        captured = await books.execute(capture(account_id, placed.hold_id, 600))
        await dispute(books, "pi_edge_4", "dp_edge_4", "won", 750)
        account = await books.account_now(account_id)
        findings = await audited(isolated_db, books)
    finally:
        await books.uow.committer.stop()

    assert (taken_back.balance, taken_back.held, taken_back.available) == (-300, 600, -900)
    assert (captured.balance, captured.available) == (-900, -900)
    assert (account.balance, account.topup_balance, account.held) == (-150, -150, 0)
    assert findings == []


async def test_a_balance_as_of_the_instant_a_hold_and_its_grant_expire_counts_neither(
    isolated_db: IsolatedDatabase,
) -> None:
    """A grant of 100 and a hold of 30 on it expire at the same instant E; another grant of
    40 never does. As of a microsecond before E the account held 30 of 140; as of E itself
    the hold's share has come back and lapsed with the grant (a spend at E would find 40),
    whether the expiries were recorded by then or not: the answer for E is the same before
    and after the sweeper records them, later than E."""
    now = [datetime.now(UTC)]
    books = isolated_db.ledger(clock=lambda: now[0])
    services = cast(Services, SimpleNamespace(ledger=books))
    account_id = "acct_edge_5"
    ends = now[0] + timedelta(seconds=1)
    try:
        await open_account(books, account_id, 0)
        lapsing = await books.execute(grant(account_id, 100, "g1", priority=0, expires_at=ends))
        await books.execute(grant(account_id, 40, "g2", expires_at=None))
        await books.execute(hold(account_id, 30, "h", 1))
        # The moments asked about must have passed (an as_of in the future is refused).
        await asyncio.sleep((ends - datetime.now(UTC)).total_seconds() + 0.01)
        just_before = await credits_as_of(
            services, account_id, (ends - timedelta(microseconds=1)).isoformat()
        )
        at_expiry = await credits_as_of(services, account_id, ends.isoformat())
        now[0] = datetime.now(UTC)
        await books.execute(ExpireGrant(account_id=account_id, grant_id=lapsing.grant_id))
        after_the_sweep = await credits_as_of(services, account_id, ends.isoformat())
        findings = await audited(isolated_db, books)
    finally:
        await books.uow.committer.stop()

    assert (just_before.balance, just_before.held, just_before.available) == (140, 30, 110)
    assert (at_expiry.balance, at_expiry.held, at_expiry.granted) == (40, 0, 40)
    assert after_the_sweep == at_expiry
    assert findings == []
