"""Balances read and answered between a hold's or grant's expiry and the sweeper's record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import cast

import pytest

from api.grant_reads import grants_now
from api.schemas import AccountCredits
from api.services import Services
from audit.verify import verify
from ledger.commands import (
    ExpireGrant,
    GrantCredits,
    PlaceHold,
    ResetMonth,
    SettleHold,
    SpendCredits,
)
from ledger.domain.errors import GrantNotDue, InsufficientCredits
from ledger.domain.ids import account_stream_id
from projections.queries import Views
from tests.conftest import IsolatedDatabase
from tests.support.events import caught_up, stream_events
from tests.support.ledger import open_account
from tests.support.times import UNJUDGED


async def test_a_grant_past_its_expiry_is_out_of_the_balance_before_the_sweeper_comes(
    isolated_db: IsolatedDatabase,
) -> None:
    """A spend decided after a grant's expiry never uses it, swept or not. The balance read
    counted it in ``granted`` and ``available`` until the sweeper recorded the expiry (for as
    long as the sweeper or the projector was stopped): credits shown that a spend refused.
    The view's row is left out while such a grant is there; the write side shows the grant
    expired, as a spend now finds it."""
    real = datetime.now(UTC)
    now = [real - timedelta(hours=1)]
    books = isolated_db.ledger(clock=lambda: now[0])
    await open_account(books, "acct_lapse", 0)
    for key, expires_at in (("g1", real - timedelta(minutes=30)), ("g2", None)):
        await books.execute(
            GrantCredits(
                account_id="acct_lapse",
                amount=100 if key == "g1" else 40,
                priority=0,  # the expired one burns first, if anything burnt it
                expires_at=expires_at,
                reason="",
                idempotency_key=key,
            )
        )
    await caught_up(isolated_db.store)
    now[0] = real
    try:
        row = await Views(isolated_db.pool).balance("acct_lapse")
        shown = AccountCredits.of(await books.account_now("acct_lapse"))
        with pytest.raises(InsufficientCredits):
            await books.execute(
                SpendCredits(account_id="acct_lapse", amount=41, reason="", idempotency_key="s1")
            )
        spent = await books.execute(
            SpendCredits(account_id="acct_lapse", amount=40, reason="", idempotency_key="s2")
        )
    finally:
        await books.uow.committer.stop()

    assert row is None  # it said granted 140
    assert (shown.granted, shown.balance, shown.available) == (40, 40, 40)
    assert list(spent.from_grants.values()) == [40]


async def test_a_hold_past_its_expiry_is_out_of_the_balance_before_the_sweeper_comes(
    isolated_db: IsolatedDatabase,
) -> None:
    """A spend records the expiry of a hold past it first and takes its credits; the balance
    read showed them held (``available`` short of what a spend could take) until the sweeper
    came."""
    real = datetime.now(UTC)
    now = [real - timedelta(hours=1)]
    books = isolated_db.ledger(clock=lambda: now[0])
    await open_account(books, "acct_held", 100)
    await books.execute(
        PlaceHold(
            account_id="acct_held",
            amount=60,
            expires_in_seconds=60,
            reason="",
            idempotency_key="h1",
        )
    )
    await caught_up(isolated_db.store)
    now[0] = real
    try:
        row = await Views(isolated_db.pool).balance("acct_held")
        shown = AccountCredits.of(await books.account_now("acct_held"))
    finally:
        await books.uow.committer.stop()

    assert row is None  # it said held 60, available 40
    assert (shown.held, shown.available, shown.balance) == (0, 100, 100)


async def test_answers_given_at_a_grant_s_expiry_count_it_no_more(
    isolated_db: IsolatedDatabase,
) -> None:
    """A spend at a grant's ``expires_at`` does not use it (it lapses then), but its answer,
    and a grant's, counted it in ``granted`` and ``available`` until the sweeper came: a
    client shown 130 available had a spend of 31 refused. The command records the expiry
    first, as it does a hold's, and the sweeper then finds it recorded."""
    now = [datetime(2999, 1, 10, 12, 0, tzinfo=UTC)]
    books = isolated_db.ledger(clock=lambda: now[0])
    await open_account(books, "acct_answers", 0)
    lapsing = await books.execute(
        GrantCredits(
            account_id="acct_answers",
            amount=100,
            priority=0,
            expires_at=now[0] + timedelta(minutes=1),
            reason="",
            idempotency_key="g1",
        )
    )
    await books.execute(
        GrantCredits(
            account_id="acct_answers",
            amount=40,
            priority=50,
            expires_at=None,
            reason="",
            idempotency_key="g2",
        )
    )
    now[0] += timedelta(minutes=1)  # exactly its expires_at
    try:
        spent = await books.execute(
            SpendCredits(account_id="acct_answers", amount=10, reason="", idempotency_key="s")
        )
        granted = await books.execute(
            GrantCredits(
                account_id="acct_answers",
                amount=5,
                priority=50,
                expires_at=None,
                reason="",
                idempotency_key="g3",
            )
        )
        with pytest.raises(GrantNotDue):
            await books.execute(ExpireGrant(account_id="acct_answers", grant_id=lapsing.grant_id))
        events = await stream_events(isolated_db.store, account_stream_id("acct_answers"))
        await caught_up(isolated_db.store)
        report = await verify(isolated_db.pool, max_time_skew=UNJUDGED)
    finally:
        await books.uow.committer.stop()

    assert (spent.granted, spent.available, spent.balance) == (30, 30, 30)  # it said 130
    assert (granted.granted, granted.available) == (35, 35)
    assert [kind for kind, _ in events[-3:]] == ["GrantExpired", "CreditsSpent", "CreditsGranted"]
    assert events[-3][1]["lapsed"] == 100
    assert report.findings == []


async def test_a_grant_past_its_expiry_is_listed_expired_before_the_sweeper_comes(
    isolated_db: IsolatedDatabase,
) -> None:
    """The grants list (``GET …/grants``, ``ledger grants list``) showed a grant past its
    expiry active, all of it remaining, until the sweeper recorded its expiry, while spends
    no longer used it. It lists it expired now, with what its expiry leaves (what an open
    hold reserves of it), under ``status=expired`` and not ``active``."""
    real = datetime.now(UTC)
    now = [real - timedelta(hours=1)]
    books = isolated_db.ledger(clock=lambda: now[0])
    services = cast(Services, SimpleNamespace(views=Views(isolated_db.pool), ledger=books))
    await open_account(books, "acct_listed", 0)
    ends = real - timedelta(minutes=30)
    lapsing = await books.execute(
        GrantCredits(
            account_id="acct_listed",
            amount=100,
            priority=0,
            expires_at=ends,
            reason="",
            idempotency_key="g1",
        )
    )
    kept = await books.execute(
        GrantCredits(
            account_id="acct_listed",
            amount=40,
            priority=50,
            expires_at=None,
            reason="",
            idempotency_key="g2",
        )
    )
    await books.execute(
        PlaceHold(
            account_id="acct_listed",
            amount=30,  # of the first grant, and open past its expiry
            expires_in_seconds=7200,
            reason="",
            idempotency_key="h1",
        )
    )
    await caught_up(isolated_db.store)
    now[0] = real
    try:
        listed = await grants_now(services, "acct_listed", "all", limit=10)
        active = await grants_now(services, "acct_listed", "active", limit=10)
        expired = await grants_now(services, "acct_listed", "expired", limit=10)
    finally:
        await books.uow.committer.stop()

    shown = [(g.grant_id, g.status, g.remaining, g.closed_at) for g in listed]
    assert shown == [
        (kept.grant_id, "active", 40, None),
        (lapsing.grant_id, "expired", 30, ends),  # it said active, 100
    ]
    assert [g.grant_id for g in active] == [kept.grant_id]
    assert [g.grant_id for g in expired] == [lapsing.grant_id]


async def test_a_hold_read_shows_the_balances_without_a_grant_past_its_expiry(
    isolated_db: IsolatedDatabase,
) -> None:
    """``GET …/holds/{hold_id}`` answers with the account's balances: they counted a grant
    past its expiry, its expiry not recorded yet, in ``available``."""
    real = datetime.now(UTC)
    now = [real - timedelta(hours=1)]
    books = isolated_db.ledger(clock=lambda: now[0])
    await open_account(books, "acct_hold_read", 50)
    await books.execute(
        GrantCredits(
            account_id="acct_hold_read",
            amount=100,
            priority=50,
            expires_at=real - timedelta(minutes=30),
            reason="",
            idempotency_key="g1",
        )
    )
    held = await books.execute(
        PlaceHold(
            account_id="acct_hold_read",
            amount=20,  # of the allowance
            expires_in_seconds=7200,
            reason="",
            idempotency_key="h1",
        )
    )
    now[0] = real
    try:
        shown = await books.hold("acct_hold_read", held.hold_id)
    finally:
        await books.uow.committer.stop()

    assert (shown.status, shown.balance, shown.held, shown.available) == ("held", 50, 20, 30)


async def test_a_capture_at_a_grant_s_expiry_answers_balances_without_it(
    isolated_db: IsolatedDatabase,
) -> None:
    """A capture may spend what its hold reserved of a grant past its expiry; what it does
    not use lapses, and the rest of the grant with it. Its answer counted the rest in
    ``available`` until the sweeper came; the capture records the grant's expiry before it,
    as the sweeper would have (its answer said none of the hold's share lapsed)."""
    now = [datetime(2999, 1, 10, 12, 0, tzinfo=UTC)]
    books = isolated_db.ledger(clock=lambda: now[0])
    await open_account(books, "acct_capture", 0)
    lapsing = await books.execute(
        GrantCredits(
            account_id="acct_capture",
            amount=100,
            priority=50,
            expires_at=now[0] + timedelta(minutes=1),
            reason="",
            idempotency_key="g1",
        )
    )
    held = await books.execute(
        PlaceHold(
            account_id="acct_capture",
            amount=30,
            expires_in_seconds=3600,
            reason="",
            idempotency_key="h1",
        )
    )
    now[0] += timedelta(minutes=1)
    try:
        captured = await books.execute(
            SettleHold(
                account_id="acct_capture", hold_id=held.hold_id, outcome="captured", amount=10
            )
        )
        events = await stream_events(isolated_db.store, account_stream_id("acct_capture"))
        await caught_up(isolated_db.store)
        report = await verify(isolated_db.pool, max_time_skew=UNJUDGED)
    finally:
        await books.uow.committer.stop()

    assert (captured.balance, captured.available) == (0, 0)  # it said 90
    assert (captured.released, captured.lapsed) == (20, 20)
    assert [kind for kind, _ in events[-2:]] == ["GrantExpired", "HoldCaptured"]
    assert (events[-2][1]["grant_id"], events[-2][1]["lapsed"]) == (lapsing.grant_id, 70)
    assert events[-1][1]["grants_lapsed"] == {lapsing.grant_id: 20}
    assert report.findings == []


@pytest.mark.parametrize("outcome", ["captured", "released"])
@pytest.mark.parametrize("swept", [True, False])
async def test_a_settlement_after_a_grant_s_expiry_says_what_lapsed_swept_or_not(
    isolated_db: IsolatedDatabase, outcome: str, swept: bool
) -> None:
    """What a hold does not use of its share of a grant that expired while it was open
    lapses. Settled before the sweeper came, its answer said ``lapsed: 0`` of a ``released``
    that never came back (``available`` 0): it settled first, giving the share back to the
    grant, and the grant's expiry, recorded right after, let it lapse."""
    now = [datetime(2999, 1, 10, 12, 0, tzinfo=UTC)]
    books = isolated_db.ledger(clock=lambda: now[0])
    account_id = f"acct_settled_{outcome}_{swept}"
    await open_account(books, account_id, 0)
    granted = await books.execute(
        GrantCredits(
            account_id=account_id,
            amount=100,
            priority=50,
            expires_at=now[0] + timedelta(hours=1),
            reason="",
            idempotency_key="g1",
        )
    )
    held = await books.execute(
        PlaceHold(
            account_id=account_id,
            amount=60,
            expires_in_seconds=7200,
            reason="",
            idempotency_key="h",
        )
    )
    now[0] += timedelta(minutes=90)  # the grant has expired, the hold has not
    try:
        if swept:
            await books.execute(ExpireGrant(account_id=account_id, grant_id=granted.grant_id))
        settled = await books.execute(
            SettleHold(
                account_id=account_id,
                hold_id=held.hold_id,
                outcome=outcome,  # type: ignore[arg-type]
                amount=10 if outcome == "captured" else 0,
            )
        )
        await caught_up(isolated_db.store)
        report = await verify(isolated_db.pool, max_time_skew=UNJUDGED)
    finally:
        await books.uow.committer.stop()

    captured = 10 if outcome == "captured" else 0
    assert (settled.captured, settled.released) == (captured, 60 - captured)
    assert settled.lapsed == 60 - captured  # it said 0 unswept
    assert (settled.balance, settled.available) == (0, 0)
    assert report.findings == []


async def test_a_capture_answers_balances_without_another_hold_past_its_expiry(
    isolated_db: IsolatedDatabase,
) -> None:
    """A capture or release answers the account's balances: they counted another hold past
    its expiry in ``held`` (``available`` short by what the next spend takes) until the
    sweeper came, while ``GET …/holds/{id}`` and the balance read left it out. The
    settlement records that hold's expiry before its own, as a spend would."""
    now = [datetime(2999, 1, 10, 12, 0, tzinfo=UTC)]
    books = isolated_db.ledger(clock=lambda: now[0])
    await open_account(books, "acct_two_holds", 100)
    lapsing = await books.execute(
        PlaceHold(
            account_id="acct_two_holds",
            amount=30,
            expires_in_seconds=60,
            reason="",
            idempotency_key="h1",
        )
    )
    kept = await books.execute(
        PlaceHold(
            account_id="acct_two_holds",
            amount=20,
            expires_in_seconds=3600,
            reason="",
            idempotency_key="h2",
        )
    )
    now[0] += timedelta(seconds=60)  # exactly the first one's expiry
    try:
        captured = await books.execute(
            SettleHold(
                account_id="acct_two_holds", hold_id=kept.hold_id, outcome="captured", amount=5
            )
        )
        read = await books.hold("acct_two_holds", lapsing.hold_id)
        events = await stream_events(isolated_db.store, account_stream_id("acct_two_holds"))
        await caught_up(isolated_db.store)
        report = await verify(isolated_db.pool, max_time_skew=UNJUDGED)
    finally:
        await books.uow.committer.stop()

    assert (captured.held, captured.available, captured.balance) == (0, 95, 95)  # held 30
    assert [kind for kind, _ in events[-2:]] == ["HoldExpired", "HoldCaptured"]
    # As the expiry a spend records first: the balances once it was recorded, before the
    # capture (the other hold still open).
    assert (read.status, read.held, read.available) == ("expired", 20, 80)
    assert report.findings == []


async def test_a_reset_of_the_same_period_answers_balances_without_expiries_due(
    isolated_db: IsolatedDatabase,
) -> None:
    """A reset of the period the account is in changes nothing, but it answers the
    balances: they counted a grant past its expiry in ``granted`` and a hold past its
    expiry in ``held`` until the sweeper came. It answers them as a balance read does, and
    still records nothing."""
    now = [datetime(2999, 1, 10, 12, 0, tzinfo=UTC)]
    books = isolated_db.ledger(clock=lambda: now[0])
    await open_account(books, "acct_same_period", 100)
    await books.execute(
        GrantCredits(
            account_id="acct_same_period",
            amount=40,
            priority=50,
            expires_at=now[0] + timedelta(minutes=1),
            reason="",
            idempotency_key="g1",
        )
    )
    await books.execute(
        PlaceHold(
            account_id="acct_same_period",
            amount=30,
            expires_in_seconds=60,
            reason="",
            idempotency_key="h1",
        )
    )
    now[0] += timedelta(minutes=1)
    try:
        before = await stream_events(isolated_db.store, account_stream_id("acct_same_period"))
        answer = await books.execute(ResetMonth(account_id="acct_same_period", period="2999-01"))
        after = await stream_events(isolated_db.store, account_stream_id("acct_same_period"))
    finally:
        await books.uow.committer.stop()

    shown = AccountCredits.of(answer)
    assert (shown.granted, shown.held, shown.balance, shown.available) == (0, 0, 100, 100)
    assert after == before  # it said granted 40, held 30, available 110


async def test_a_grant_s_expiry_is_listed_at_the_same_time_before_and_after_the_sweeper(
    isolated_db: IsolatedDatabase,
) -> None:
    """Before the sweeper records a grant's expiry the list shows it closed at its
    ``expires_at``; once recorded, the view said the sweep's commit time instead (seconds
    later, or hours with the sweeper stopped): a client saw ``closed_at`` move. An expiry
    happens at ``expires_at``, recorded or not; the audit agrees."""
    real = datetime.now(UTC)
    now = [real - timedelta(hours=1)]
    books = isolated_db.ledger(clock=lambda: now[0])
    services = cast(Services, SimpleNamespace(views=Views(isolated_db.pool), ledger=books))
    await open_account(books, "acct_closed_at", 0)
    ends = real - timedelta(minutes=30)
    lapsing = await books.execute(
        GrantCredits(
            account_id="acct_closed_at",
            amount=100,
            priority=50,
            expires_at=ends,
            reason="",
            idempotency_key="g1",
        )
    )
    await caught_up(isolated_db.store)
    now[0] = real
    try:
        before = await grants_now(services, "acct_closed_at", "all", limit=10)
        await books.execute(ExpireGrant(account_id="acct_closed_at", grant_id=lapsing.grant_id))
        await caught_up(isolated_db.store)
        after = await grants_now(services, "acct_closed_at", "all", limit=10)
        report = await verify(isolated_db.pool, max_time_skew=UNJUDGED)
    finally:
        await books.uow.committer.stop()

    assert [(g.status, g.remaining, g.closed_at) for g in before] == [("expired", 0, ends)]
    assert [(g.status, g.remaining, g.closed_at) for g in after] == [("expired", 0, ends)]
    assert report.findings == []
