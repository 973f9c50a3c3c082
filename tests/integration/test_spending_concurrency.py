"""Two processes' worth of writers on one account: optimistic concurrency decides."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from ledger.commands import ChangeAllowance, GrantCredits, PlaceHold, ResetMonth, SpendCredits
from ledger.domain.errors import InsufficientCredits, PeriodOutOfOrder
from ledger.service import Ledger
from ledger.store.claims import StoredAnswer
from tests.conftest import Ledgers, unique
from tests.support.ledger import conflicts_retried, open_account


async def test_writers_without_a_shared_lock_never_overdraw(
    pool: asyncpg.Pool, ledgers: Ledgers
) -> None:
    """Each ledger stands for one process: its in-process lock does not see the other's."""
    first, second = ledgers(pool), ledgers(pool)
    account_id = unique("acct")
    await open_account(first, account_id, 100)

    async def spend(books: Ledger, n: int) -> bool:
        try:
            await books.execute(
                SpendCredits(
                    account_id=account_id, amount=7, reason="work", idempotency_key=f"key-{n}"
                )
            )
        except InsufficientCredits:
            return False
        return True

    try:
        outcomes = await asyncio.gather(*(spend(first if n % 2 else second, n) for n in range(30)))
    finally:
        await first.uow.committer.stop()
        await second.uow.committer.stop()

    assert outcomes.count(True) == 100 // 7
    account = await first.account(account_id, fresh=True)
    assert account.balance == 100 % 7
    assert account.version == 1 + 100 // 7


async def test_a_retry_refused_on_state_its_lost_first_attempt_made_gets_the_first_answer(
    pool: asyncpg.Pool,
    ledgers: Ledgers,
) -> None:
    """Found by the simulator (seed 2, step 363): a hold's answer is lost, the client asks
    the other instance, whose cached balance is too low; while it looks for the claim
    (none yet) the first attempt commits, so the fresh load that follows finds the hold
    already open. The claim must be looked up again, and the first answer given."""
    first, second = ledgers(pool), ledgers(pool)
    account_id = unique("acct")
    await open_account(first, account_id, 100)
    await second.account(account_id)  # cached here with 100 credits
    await first.execute(
        GrantCredits(
            account_id=account_id,
            amount=1000,
            priority=50,
            expires_at=None,
            reason="",
            idempotency_key="g",
        )
    )
    hold = PlaceHold(
        account_id=account_id, amount=150, expires_in_seconds=600, reason="job", idempotency_key="h"
    )
    find = second.uow.claims.find
    answers = []

    async def first_attempt_lands_meanwhile(scope: str, key: str) -> StoredAnswer | None:
        found = await find(scope, key)
        if not answers:
            answers.append(await first.execute(hold))
        return found

    second.uow.claims.find = first_attempt_lands_meanwhile  # type: ignore[method-assign]

    again = await second.execute(hold)

    assert again == answers[0]
    stored = await first.account(account_id, fresh=True)
    assert list(stored.holds) == [again.hold_id]
    assert stored.available == 950


async def test_nothing_to_do_is_never_decided_on_a_stale_cache(
    pool: asyncpg.Pool, ledgers: Ledgers
) -> None:
    """Found by the simulator (seed 30, step 354): one instance changed the plan to 500;
    the other, its cache still at 0, took "change it to 0" for a plan already set and
    wrote nothing, so the next reset gave 500. Writing nothing meets no version check:
    it is decided on fresh state."""
    first, second = ledgers(pool), ledgers(pool)
    account_id = unique("acct")
    await open_account(first, account_id, 0)
    await second.account(account_id)  # cached here with a plan of 0
    await first.execute(ChangeAllowance(account_id=account_id, monthly_allowance=500))

    await second.execute(ChangeAllowance(account_id=account_id, monthly_allowance=0))
    await second.execute(ResetMonth(account_id=account_id, period="2999-01"))

    stored = await first.account(account_id, fresh=True)
    assert (stored.next_monthly_allowance, stored.allowance_remaining) == (0, 0)


async def test_a_keyed_nothing_to_do_is_never_decided_on_a_stale_cache(
    pool: asyncpg.Pool, ledgers: Ledgers
) -> None:
    """One instance reset the account to a later month; the other, its cache still in the
    month it opened in, took a keyed reset to that month for one already made and answered
    it (its claim written, kept for every repeat), where the store refuses it: the month is
    earlier than the account's. A claim alone meets no version check either."""
    first, second = ledgers(pool), ledgers(pool)
    account_id = unique("acct")
    await open_account(first, account_id, 100)
    opened_in = (await second.account(account_id)).period  # cached here in that month
    await first.execute(ResetMonth(account_id=account_id, period="2999-01"))

    with pytest.raises(PeriodOutOfOrder):
        await second.execute(
            ResetMonth(account_id=account_id, period=opened_in, idempotency_key="r")
        )
    with pytest.raises(PeriodOutOfOrder):  # no answer kept for the key
        await first.execute(
            ResetMonth(account_id=account_id, period=opened_in, idempotency_key="r")
        )


async def test_a_conflict_catches_the_stale_copy_up_with_the_events_it_missed(
    pool: asyncpg.Pool,
    ledgers: Ledgers,
) -> None:
    """A command decided on a copy another writer has moved on from conflicts; the copy is
    then brought up with the events after its version, and must be what a load from the
    store gives: every field, not only the balance."""
    first, second = ledgers(pool), ledgers(pool)
    account_id = unique("acct")
    await open_account(first, account_id, 1_000)
    await second.account(account_id)  # cached here at version 1
    for n in range(3):
        await first.execute(
            SpendCredits(account_id=account_id, amount=10, reason="a", idempotency_key=f"a{n}")
        )
    await first.execute(
        GrantCredits(account_id=account_id, amount=50, priority=1, expires_at=None,
                     reason="promo", idempotency_key="g1")
    )  # fmt: skip

    retried = conflicts_retried()
    await second.execute(
        SpendCredits(account_id=account_id, amount=25, reason="b", idempotency_key="b")
    )

    try:
        assert conflicts_retried() == retried + 1  # decided on the stale copy first
        caught_up = await second.account(account_id)  # from its cache
        loaded = await ledgers(pool).account(account_id)  # no cache: the store
        assert caught_up.version == loaded.version == 6
        assert _state(caught_up) == _state(loaded)
        assert (caught_up.allowance_remaining, caught_up.granted) == (945, 50)
    finally:
        await first.uow.committer.stop()
        await second.uow.committer.stop()


def _state(account: object) -> dict[str, object]:
    return {k: v for k, v in vars(account).items() if k != "_pending_events"}
