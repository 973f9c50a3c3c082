"""The times events record: one write tells one time, its command's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ledger.bootstrap import build_ledger
from ledger.commands import (
    GrantCredits,
    HoldOutcome,
    PlaceHold,
    ResetMonth,
    SetLowBalanceThreshold,
    SettleHold,
    VoidGrant,
)
from ledger.domain.ids import account_stream_id
from ledger.store.mapper import MsgspecMapper
from tests.conftest import IsolatedDatabase
from tests.support.ledger import open_account


async def test_every_event_of_a_write_tells_its_commands_time(
    isolated_db: IsolatedDatabase,
) -> None:
    """A capture or release (and a grant, void, reset or threshold change) records the
    expiries due at its command's time with it, stamped with that time; its own event took
    the wall clock instead, so one write told two times and the stream's went back (here,
    with the ledger's clock ahead of the wall clock, by centuries)."""
    now = [datetime(2999, 1, 10, 12, 0, tzinfo=UTC)]
    books = build_ledger(isolated_db.pool, clock=lambda: now[0])
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
