"""The aggregate cache is safe by construction: decisions run on copies, and mutable state is refused."""

from __future__ import annotations

import sys
from typing import Any
from uuid import UUID

import pytest

from ledger.commands import PlaceHold, SpendCredits
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.domain.errors import InsufficientCredits
from ledger.domain.holds import OpenHold
from ledger.domain.ids import account_stream_id
from ledger.payment_events import CheckoutChange
from ledger.service import Ledger
from ledger.store.repository import MutableState, copy_of
from tests.conftest import unique
from tests.integration.test_payment_races import Purchase, deliver, record_session
from tests.support.ledger import open_account


def cached_state(ledger: Ledger, account_id: str) -> dict[str, object]:
    _, state, _ = ledger.repository._cache[account_stream_id(account_id).int]
    return dict(state)


async def test_a_refused_decision_leaves_the_cached_account_as_it_was(ledger: Ledger) -> None:
    account_id = unique("acct")
    await open_account(ledger, account_id, 100)
    await ledger.execute(
        PlaceHold(
            account_id=account_id,
            amount=30,
            expires_in_seconds=600,
            reason="job",
            idempotency_key=unique("k"),
        )
    )
    before = cached_state(ledger, account_id)

    with pytest.raises(InsufficientCredits):
        await ledger.execute(
            SpendCredits(account_id=account_id, amount=500, reason="x", idempotency_key=unique("k"))
        )

    assert cached_state(ledger, account_id) == before


async def test_changing_a_loaded_account_in_place_never_reaches_the_cache(ledger: Ledger) -> None:
    account_id = unique("acct")
    await open_account(ledger, account_id, 100)
    await ledger.account(account_id)  # cached
    loaded = await ledger.account(account_id)

    loaded.holds["forged"] = OpenHold(
        amount=99,
        from_allowance=99,
        from_topup=0,
        period="x",
        expires_at="2999-01-01T00:00:00+00:00",
    )
    loaded.topup_balance = 10**9

    again = await ledger.account(account_id)
    assert "forged" not in again.holds
    assert again.topup_balance == 0


async def test_an_aggregate_holding_a_mutable_value_is_refused(ledger: Ledger) -> None:
    account_id = unique("acct")
    account = await open_account(ledger, account_id, 100)
    account.__dict__["notes"] = ["a list: a decision could change it in place"]

    with pytest.raises(MutableState, match="notes holds a list"):
        copy_of(account)


@pytest.mark.parametrize("recorded_here", [False, True])
async def test_a_paid_delivery_keeps_its_account_at_its_new_version_and_not_its_session(
    ledger: Ledger, recorded_here: bool
) -> None:
    """A Stripe event's load keeps nothing of what it reads; its commit keeps the account it
    credited, and not the session it settled (its next event is rare: a copy and check of
    its state each payment for nothing), nor any older copy of it: read from the store next."""
    purchase = Purchase(unique("acct"))
    await open_account(ledger, purchase.account_id, 0)
    session = await record_session(ledger, purchase)
    if not recorded_here:
        ledger.repository.forget([session])  # as a session another process recorded
    kept: list[tuple[str, int]] = []
    remember = ledger.repository._remember

    def counted(aggregate: Any) -> None:
        kept.append((type(aggregate).__name__, aggregate.version))
        remember(aggregate)

    ledger.repository._remember = counted  # type: ignore[method-assign]

    event = purchase.paid()
    assert await deliver(ledger, event)

    assert kept == [("CreditAccount", 2)]
    assert not ledger.repository.holds(session.id)
    paid = await ledger.session(purchase.session_id)
    assert paid is not None
    assert paid.paid
    # Read from the store again, it is credited once however the payment is told again.
    assert not await deliver(ledger, event)
    assert await deliver(ledger, purchase.paid(CheckoutChange.PAYMENT_SUCCEEDED))
    assert (await ledger.account(purchase.account_id, fresh=True)).balance == 1000


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython's dict tables")
async def test_an_account_loaded_and_spent_from_keeps_a_compact_state_in_the_cache(
    ledger: Ledger,
) -> None:
    """A load replays the stream into a new aggregate, which the spend decides on and its
    commit remembers: a state as compact as its keys allow, which ``dict()`` copies whole at
    every write after (ledger/store/repository.py ``_frozen``)."""
    account_id = unique("acct")
    await open_account(ledger, account_id, 100)
    ledger.repository._cache.clear()  # as after a restart: the next spend loads it
    for _ in range(3):
        await ledger.execute(
            SpendCredits(account_id=account_id, amount=1, reason="x", idempotency_key=unique("k"))
        )
        _, state, _ = ledger.repository._cache[account_stream_id(account_id).int]
        assert sys.getsizeof(state) == sys.getsizeof(dict(state.items()))


class _CountedId(UUID):
    """A stream id that counts its hashes (``UUID.__hash__`` is a Python method)."""

    hashes = 0

    def __hash__(self) -> int:
        _CountedId.hashes += 1
        return super().__hash__()


async def test_loading_several_streams_hashes_no_stream_id_beyond_the_stores_read(
    ledger: Ledger,
) -> None:
    """``get_many`` (a Stripe event's load) keeps what it finds by position: a stream id's
    hash is a Python method (~900 instructions), and its dicts by stream id hashed a paid
    delivery's two ids six times over what the store's shared read hashes."""
    account_id = unique("acct")
    await open_account(ledger, account_id, 100)  # in memory
    purchase = Purchase(account_id)
    session = await record_session(ledger, purchase)
    ledger.repository.forget([session])  # read from the store
    session_id = _CountedId(int=session.id.int)
    account_stream = _CountedId(int=account_stream_id(account_id).int)
    nowhere = _CountedId(int=account_stream_id(unique("acct")).int)

    _CountedId.hashes = 0
    await ledger.store.load_many_from_snapshots([session_id, nowhere])
    by_the_store = _CountedId.hashes
    _CountedId.hashes = 0
    loaded = await ledger.repository.get_many(
        [(CheckoutSession, session_id), (CreditAccount, account_stream), (CreditAccount, nowhere)]
    )

    assert _CountedId.hashes == by_the_store
    assert [type(aggregate) for aggregate in loaded] == [CheckoutSession, CreditAccount, type(None)]
    assert loaded[0].session_id == purchase.session_id
    assert loaded[1].account_id == account_id
