"""Notifications and settled holds' answers between an expiry and the sweeper's record of it.

Whatever they report of the account is what a balance read would say at that moment: no
hold and no grant past its expiry counts, recorded or not (a payment's command and the
sweeper's own recorded one expiry and counted the others).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from api.schemas import AccountCredits
from ledger.commands import (
    ExpireGrant,
    GrantCredits,
    SetLowBalanceThreshold,
    SettleHold,
    SpendCredits,
    VoidGrant,
)
from ledger.domain.checkout import CheckoutSession
from ledger.notifications.endpoints import EndpointRegistry
from ledger.payment_events import CheckoutChange, CheckoutEvent
from ledger.service import Ledger
from tests.conftest import IsolatedDatabase, unique
from tests.support.events import caught_up
from tests.support.ledger import open_account, place_hold, save

TYPES = ["credits.purchased", "hold.expired", "grant.expired", "credits.depleted"]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def grant(books: Ledger, account_id: str, amount: int, expires_at: datetime | None) -> str:
    granted = await books.execute(
        GrantCredits(
            account_id=account_id,
            amount=amount,
            priority=50,
            expires_at=expires_at,
            reason="",
            idempotency_key=unique("grant"),
        )
    )
    return str(granted.grant_id)


async def notified(db: IsolatedDatabase, account_id: str) -> dict[str, list[dict[str, Any]]]:
    """Each type's notifications' data, in the order of their events."""
    await caught_up(db.store)
    rows = await db.pool.fetch(
        "SELECT payload FROM webhook_deliveries WHERE account_id = $1 ORDER BY position",
        account_id,
    )
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        notification = msgspec.json.decode(row["payload"])
        found.setdefault(notification["type"], []).append(notification["data"])
    return found


def balances(data: dict[str, Any]) -> tuple[int, int, int, int]:
    return data["balance"], data["granted"], data["held"], data["available"]


async def test_a_payment_after_a_grants_expiry_reports_the_balance_without_the_grant(
    isolated_db: IsolatedDatabase,
) -> None:
    """``credits.purchased`` counted a grant past its expiry until the sweeper came, and
    ``credits.depleted`` waited for the sweeper too."""
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        "http://127.0.0.1:9/hooks", TYPES
    )
    clock = Clock(datetime.now(UTC))
    books = isolated_db.ledger(clock=clock)
    account_id = unique("acct")
    try:
        await open_account(books, account_id, 0)
        await grant(books, account_id, 100, clock.now + timedelta(minutes=1))
        session_id = unique("cs")
        await save(
            books,
            CheckoutSession.request(
                session_id=session_id,
                account_id=account_id,
                credits=500,
                amount=500,
                currency="usd",
                checkout_url="",
                expires_at=0,
            ),
        )
        clock.now += timedelta(minutes=2)
        paid = CheckoutEvent(
            event_id=unique("evt"),
            change=CheckoutChange.COMPLETED,
            session_id=session_id,
            paid=True,
            payment_intent=unique("pi"),
            amount_total=500,
            currency="usd",
            account_id=account_id,
            credits=500,
            checkout_url=None,
            expires_at=None,
        )
        assert await books.apply_payment_event(paid.event_id, "checkout.session.completed", paid)
        read = AccountCredits.of(await books.account_now(account_id))
    finally:
        await books.uow.committer.stop()

    found = await notified(isolated_db, account_id)
    [purchased] = found["credits.purchased"]
    assert (read.balance, read.granted, read.available) == (500, 0, 500)
    assert balances(purchased) == (500, 0, 0, 500)
    assert [e["lapsed"] for e in found["grant.expired"]] == [100]


async def test_the_sweepers_hold_expiry_reports_no_lapsed_grant_nor_other_due_hold(
    isolated_db: IsolatedDatabase,
) -> None:
    """The sweeper records one hold's expiry: its ``hold.expired`` (and the answer its claim
    keeps, which a GET of the hold shows) counted a grant past its expiry and the other holds
    past theirs, which no balance read counts."""
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        "http://127.0.0.1:9/hooks", TYPES
    )
    clock = Clock(datetime.now(UTC))
    books = isolated_db.ledger(clock=clock)
    account_id = unique("acct")
    try:
        await open_account(books, account_id, 100)
        await grant(books, account_id, 200, clock.now + timedelta(minutes=1))
        await grant(books, account_id, 50, None)
        first = await place_hold(books, account_id, 60, 60)
        second = await place_hold(books, account_id, 30, 90)
        clock.now += timedelta(minutes=5)
        expired = await books.execute(
            SettleHold(account_id=account_id, hold_id=first, outcome="expired")
        )
        read = AccountCredits.of(await books.account_now(account_id))
        shown = await books.hold(account_id, second)
    finally:
        await books.uow.committer.stop()

    assert (read.balance, read.granted, read.held, read.available) == (150, 50, 0, 150)
    assert (expired.balance, expired.held, expired.available) == (150, 0, 150)
    assert (shown.status, shown.balance, shown.held, shown.available) == ("expired", 150, 0, 150)
    found = await notified(isolated_db, account_id)
    assert [balances(d) for d in found["hold.expired"]] == [(150, 50, 0, 150)] * 2
    assert [balances(d) for d in found["grant.expired"]] == [(150, 50, 0, 150)]


async def test_hold_expired_says_what_lapsed_of_it_as_the_holds_answer_does(
    isolated_db: IsolatedDatabase,
) -> None:
    """A hold's share of a grant voided while it was open lapses with the hold: its answer
    counted it in ``lapsed``, its ``hold.expired`` only the allowance's share (0)."""
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        "http://127.0.0.1:9/hooks", TYPES
    )
    clock = Clock(datetime.now(UTC))
    books = isolated_db.ledger(clock=clock)
    account_id = unique("acct")
    try:
        await open_account(books, account_id, 0)
        granted = await grant(books, account_id, 100, None)
        held = await place_hold(books, account_id, 60, 90)
        await books.execute(VoidGrant(account_id=account_id, grant_id=granted, reason=""))
        clock.now += timedelta(minutes=5)
        expired = await books.execute(
            SettleHold(account_id=account_id, hold_id=held, outcome="expired")
        )
    finally:
        await books.uow.committer.stop()

    assert (expired.released, expired.lapsed) == (60, 60)
    found = await notified(isolated_db, account_id)
    assert [(d["released"], d["lapsed"]) for d in found["hold.expired"]] == [(60, 60)]


async def test_the_sweepers_grant_expiry_reports_no_other_lapsed_grant_nor_due_hold(
    isolated_db: IsolatedDatabase,
) -> None:
    """The sweeper records one grant's expiry: its ``grant.expired`` counted the other grants
    and holds past their expiry."""
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        "http://127.0.0.1:9/hooks", TYPES
    )
    clock = Clock(datetime.now(UTC))
    books = isolated_db.ledger(clock=clock)
    account_id = unique("acct")
    try:
        await open_account(books, account_id, 0)
        first = await grant(books, account_id, 200, clock.now + timedelta(minutes=1))
        await grant(books, account_id, 70, clock.now + timedelta(minutes=2))
        await grant(books, account_id, 40, None)
        await place_hold(books, account_id, 250, 60)  # 200 of the first grant, 50 of the second
        clock.now += timedelta(minutes=5)
        closed = await books.execute(ExpireGrant(account_id=account_id, grant_id=first))
        read = AccountCredits.of(await books.account_now(account_id))
    finally:
        await books.uow.committer.stop()

    assert (read.balance, read.granted, read.held, read.available) == (40, 40, 0, 40)
    assert (closed.lapsed, closed.balance, closed.granted, closed.available) == (200, 40, 40, 40)
    found = await notified(isolated_db, account_id)
    assert [(d["lapsed"], *balances(d)) for d in found["grant.expired"]] == [
        (200, 40, 40, 0, 40),
        (70, 40, 40, 0, 40),
    ]
    assert [balances(d) for d in found["hold.expired"]] == [(40, 40, 0, 40)]


async def test_a_hold_expired_by_a_spend_answers_the_balances_after_every_expiry_due(
    isolated_db: IsolatedDatabase,
) -> None:
    """A spend records the expiries due before it spends: the answer each expired hold keeps
    (what a GET of it shows) was made between two of them, counting the holds after it and
    the grant past its expiry."""
    clock = Clock(datetime.now(UTC))
    books = isolated_db.ledger(clock=clock)
    account_id = unique("acct")
    try:
        await open_account(books, account_id, 100)
        await grant(books, account_id, 200, clock.now + timedelta(minutes=1))
        first = await place_hold(books, account_id, 60, 60)
        await place_hold(books, account_id, 30, 60)
        clock.now += timedelta(minutes=5)
        await books.execute(
            SpendCredits(account_id=account_id, amount=1, reason="", idempotency_key="s")
        )
        shown = await books.hold(account_id, first)
    finally:
        await books.uow.committer.stop()

    assert (shown.status, shown.balance, shown.held, shown.available) == ("expired", 100, 0, 100)


async def test_a_threshold_set_after_a_holds_expiry_alerts_on_what_a_balance_read_shows(
    isolated_db: IsolatedDatabase,
) -> None:
    """The alerts a threshold change sets off were judged with a hold past its expiry still
    held: ``credits.low_balance`` told of 15 available while a balance read showed 100 (and
    the sweeper's expiry then re-armed it)."""
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        "http://127.0.0.1:9/hooks", ["credits.low_balance", "hold.expired"]
    )
    clock = Clock(datetime.now(UTC))
    books = isolated_db.ledger(clock=clock)
    account_id = unique("acct")
    try:
        await open_account(books, account_id, 100)
        await place_hold(books, account_id, 85, 60)  # 15 available: not below the default 10
        clock.now += timedelta(minutes=5)
        await books.execute(SetLowBalanceThreshold(account_id=account_id, threshold=20))
        read = AccountCredits.of(await books.account_now(account_id))
    finally:
        await books.uow.committer.stop()

    assert (read.held, read.available) == (0, 100)
    found = await notified(isolated_db, account_id)
    assert "credits.low_balance" not in found
    assert [balances(d) for d in found["hold.expired"]] == [(100, 0, 0, 100)]
