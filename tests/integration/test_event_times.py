"""The times events record: one write tells one time, its command's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from audit.verify import verify
from ledger import unit_of_work
from ledger.commands import (
    GrantCredits,
    HoldOutcome,
    PlaceHold,
    ResetMonth,
    SetLowBalanceThreshold,
    SettleHold,
    SpendCredits,
    VoidGrant,
)
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.domain.ids import account_stream_id, checkout_stream_id
from ledger.handlers.account_stream import by_account
from ledger.payment_events import CheckoutChange, CheckoutEvent
from ledger.store.event_store import ConcurrencyConflict
from ledger.store.mapper import MsgspecMapper
from ledger.unit_of_work import Decision, Handler, Streams
from tests.conftest import IsolatedDatabase
from tests.support.events import caught_up
from tests.support.ledger import conflicts_retried, open_account, save
from tests.support.times import UNJUDGED


async def test_every_event_of_a_write_tells_its_commands_time(
    isolated_db: IsolatedDatabase,
) -> None:
    """A capture or release (and a grant, void, reset or threshold change) records the
    expiries due at its command's time with it, stamped with that time; its own event took
    the wall clock instead, so one write told two times and the stream's went back (here,
    with the ledger's clock ahead of the wall clock, by centuries)."""
    now = [datetime(2999, 1, 10, 12, 0, tzinfo=UTC)]
    books = isolated_db.ledger(clock=lambda: now[0])
    account_id = "acct_event_times"
    await open_account(books, account_id, 1000)

    def hold(key: str, seconds: int) -> PlaceHold:
        return PlaceHold(
            account_id=account_id,
            amount=10,
            expires_in_seconds=seconds,
            reason="",
            idempotency_key=key,
        )

    def settle(key: str, outcome: HoldOutcome, amount: int = 0) -> SettleHold:
        return SettleHold(account_id=account_id, hold_id=holds[key], outcome=outcome, amount=amount)

    holds: dict[str, str] = {}
    for key, seconds in (("a", 60), ("b", 600), ("c", 120), ("d", 600), ("e", 180)):
        holds[key] = (await books.execute(hold(key, seconds))).hold_id
    grant = await books.execute(
        GrantCredits(
            account_id=account_id,
            amount=50,
            priority=50,
            expires_at=now[0] + timedelta(seconds=240),
            reason="",
            idempotency_key="g",
        )
    )
    try:
        now[0] += timedelta(seconds=60)  # "a" is due: the capture of "b" records its expiry
        await books.execute(settle("b", "captured", 4))
        now[0] += timedelta(seconds=60)  # "c" is due: the release of "d" records its expiry
        await books.execute(settle("d", "released"))
        now[0] += timedelta(seconds=60)  # "e" is due
        await books.execute(SetLowBalanceThreshold(account_id=account_id, threshold=7))
        now[0] += timedelta(seconds=10)
        await books.execute(VoidGrant(account_id=account_id, grant_id=grant.grant_id, reason=""))
        now[0] += timedelta(days=40)
        await books.execute(ResetMonth(account_id=account_id, period="2999-02"))
    finally:
        await books.uow.committer.stop()

    recorded = await isolated_db.store.load(account_stream_id(account_id))
    mapper = MsgspecMapper()
    times = []
    by_commit: dict[datetime, set[datetime]] = {}
    for event in recorded:
        timestamp = mapper.to_domain_event(event).timestamp
        times.append(timestamp)
        by_commit.setdefault(event.recorded_at, set()).add(timestamp)
    assert times == sorted(times)
    assert all(len(told) == 1 for told in by_commit.values())
    assert all(moment.year == 2999 for moment in times)


async def stream_times(isolated_db: IsolatedDatabase, stream: UUID) -> list[datetime]:
    mapper = MsgspecMapper()
    return [
        mapper.to_domain_event(event).timestamp for event in await isolated_db.store.load(stream)
    ]


def spend(account_id: str, key: str, at: datetime | None = None) -> SpendCredits:
    return SpendCredits(account_id=account_id, amount=1, reason="", idempotency_key=key, at=at)


async def test_a_command_that_waited_for_its_turn_records_no_earlier_than_its_stream(
    isolated_db: IsolatedDatabase,
) -> None:
    """A command's time is taken when the ledger is handed it; one that then waits for the
    commands before it on the account recorded its events at that time, after events
    those commands recorded at later times: the stream's times went back."""
    start = datetime(2999, 1, 10, 12, 0, tzinfo=UTC)
    now = [start]
    books = isolated_db.ledger(clock=lambda: now[0])
    account_id = "acct_turn_waited"
    await open_account(books, account_id, 1000)
    try:
        placed = await books.execute(
            PlaceHold(
                account_id=account_id,
                amount=10,
                expires_in_seconds=60,
                reason="",
                idempotency_key="h",
            )
        )
        now[0] = start + timedelta(seconds=50)
        await books.execute(spend(account_id, "later"))
        # Handed over at +40 s and +45 s, decided after the spend of +50 s (they waited).
        waited = await books.execute(spend(account_id, "waited", start + timedelta(seconds=40)))
        settled = await books.execute(
            SettleHold(
                account_id=account_id,
                hold_id=placed.hold_id,
                outcome="captured",
                amount=5,
                at=start + timedelta(seconds=45),
            )
        )
    finally:
        await books.uow.committer.stop()

    times = await stream_times(isolated_db, account_stream_id(account_id))
    assert times == sorted(times)
    assert times[-2:] == [start + timedelta(seconds=50)] * 2
    recorded = [e.recorded_at for e in await isolated_db.store.load(account_stream_id(account_id))]
    assert recorded == sorted(recorded)  # the store's own times, as they were
    await caught_up(isolated_db.store)
    assert (await verify(isolated_db.pool, max_time_skew=UNJUDGED)).findings == []  # the chain too
    assert waited.available == 1000 - 10 - 2  # the hold still open at +50 s
    assert settled.status == "captured"


async def test_a_command_decided_again_after_another_processs_commit_records_after_it(
    isolated_db: IsolatedDatabase,
) -> None:
    """Two processes (each its own cache and turns): one's command, timed before the other's
    commit, conflicts with it and is decided again on its events, at its own earlier time."""
    start = datetime(2999, 1, 10, 12, 0, tzinfo=UTC)
    behind = isolated_db.ledger(clock=lambda: start)
    ahead = isolated_db.ledger(clock=lambda: start + timedelta(seconds=30))
    account_id = "acct_decided_again"
    try:
        await open_account(behind, account_id, 1000)
        await behind.execute(spend(account_id, "a"))  # cached by this process
        await ahead.execute(spend(account_id, "b"))
        retried = conflicts_retried()
        await behind.execute(spend(account_id, "c"))
        assert conflicts_retried() == retried + 1
    finally:
        await behind.uow.committer.stop()
        await ahead.uow.committer.stop()

    times = await stream_times(isolated_db, account_stream_id(account_id))
    assert times == sorted(times)
    assert times[-1] == start + timedelta(seconds=30)


async def test_a_write_to_two_streams_tells_one_time_no_earlier_than_either(
    isolated_db: IsolatedDatabase,
) -> None:
    """A payment records on its Checkout session and on its account: a session whose last
    event told a later time than the command's had its event raised to it, and the
    account's kept the command's: one write, two times."""
    start = datetime(2000, 1, 10, 12, 0, tzinfo=UTC)  # the ledger's clock, behind the wall's
    books = isolated_db.ledger(clock=lambda: start)
    account_id = "acct_two_streams"
    session_id = "cs_two_streams"
    try:
        await open_account(books, account_id, 0)
        session = CheckoutSession.request(
            session_id=session_id,
            account_id=account_id,
            credits=500,
            amount=500,
            currency="usd",
            checkout_url="",
            expires_at=0,
        )
        await save(books, session)  # recorded outside a command: at the wall clock
        paid = CheckoutEvent(
            event_id="evt_two_streams",
            change=CheckoutChange.COMPLETED,
            session_id=session_id,
            paid=True,
            payment_intent="pi_two_streams",
            amount_total=500,
            currency="usd",
            account_id=account_id,
            credits=500,
            checkout_url=None,
            expires_at=None,
        )
        assert await books.apply_payment_event(paid.event_id, "checkout.session.completed", paid)
    finally:
        await books.uow.committer.stop()

    account_times = await stream_times(isolated_db, account_stream_id(account_id))
    session_times = await stream_times(isolated_db, checkout_stream_id(session_id))
    assert session_times == sorted(session_times)
    assert account_times[-1] == session_times[-1] == session_times[0]


async def test_a_decision_its_streams_keep_outrunning_is_not_recorded(
    isolated_db: IsolatedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decided again at the later time its stream told, a command whose fresh loads keep
    telling later ones (other processes writing on) ends as a conflict would, rather than
    record what it judged at an earlier time than its events tell."""
    monkeypatch.setattr(unit_of_work, "MAX_ATTEMPTS", 1)
    books = isolated_db.ledger()
    decided: list[datetime | None] = []

    async def load(streams: Streams, command: SpendCredits) -> CreditAccount:
        return CreditAccount.open(command.account_id, 100, "2000-01")  # opened now, each time

    def decide(account: CreditAccount, command: SpendCredits) -> Decision[None]:
        decided.append(command.at)
        account.spend(command.amount, command.reason, command.at)
        return Decision(None, [account])

    handler = Handler(type(None), by_account, load, decide)
    try:
        with pytest.raises(ConcurrencyConflict, match="kept telling later times"):
            await books.uow.run(
                handler, spend("acct_outrun", "k", datetime(2000, 1, 1, tzinfo=UTC))
            )
    finally:
        await books.uow.committer.stop()

    assert len(decided) == 1 + unit_of_work.MAX_REDECISIONS
    assert decided == sorted(decided)  # type: ignore[type-var]
    assert await isolated_db.store.load(account_stream_id("acct_outrun")) == []
