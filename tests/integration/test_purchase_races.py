"""Purchases under one Idempotency-Key that each ask Stripe before any of them records its
session: one is recorded and answers the key; each other session Stripe made, answered to
nobody, is expired at Stripe (the real SDK against the stand-in), not left payable for its
hour. Seen by the simulator's reused purchase keys (tests/simulation/world.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from ledger.adapters.stripe_gateway import StripeGateway
from ledger.handlers.purchases import CheckoutStarted
from ledger.ports import CheckoutMispriced, CheckoutRequest, CreatedCheckout
from ledger.service import CheckoutLinks, Ledger, Pricing, RequestCheckout
from ledger.store.claims import IdempotencyKeyReused
from stripe_standin import RunningStandin, run_standin
from tests.conftest import Ledgers, unique
from tests.support.ledger import open_account


@pytest.fixture(scope="module")
async def standin() -> AsyncIterator[RunningStandin]:
    async with run_standin() as running:
        yield running


class AllAskBeforeAnyRecords:
    """The Stripe gateway, handing back a session made at the asked price only once
    ``count`` have been made: that many purchases at once have each asked Stripe before any
    records (else the first could record before the others looked at the key, and they
    would be answered from its record without asking Stripe)."""

    def __init__(self, gateway: StripeGateway, count: int) -> None:
        self.gateway = gateway
        self.count = count
        self.all_made = asyncio.Event()

    async def create_checkout(self, request: CheckoutRequest) -> CreatedCheckout:
        created = await self.gateway.create_checkout(request)
        if created.amount_total == request.credits * request.unit_amount:
            self.count -= 1
            if self.count <= 0:
                self.all_made.set()
            await asyncio.wait_for(self.all_made.wait(), 30)
        return created

    async def expire_checkout(self, session_id: str) -> None:
        await self.gateway.expire_checkout(session_id)


@pytest.fixture
async def gateway(standin: RunningStandin) -> AsyncIterator[StripeGateway]:
    made = StripeGateway("sk_test_races", api_base=standin.base_url, max_network_retries=0)
    try:
        yield made
    finally:
        await made.close()


def two_replicas(
    ledgers: Ledgers,
    pool: asyncpg.Pool,
    gateway: AllAskBeforeAnyRecords,
    links_differ: bool = False,
) -> list[Ledger]:
    """Two ledgers on one database; with ``links_differ`` each sends Stripe its own success
    URL (as replicas with other settings would), so their sessions cannot be the same."""
    return [
        ledgers(
            pool,
            gateway=gateway,
            pricing=Pricing(unit_amount=1, currency="usd"),
            links=CheckoutLinks(
                success_url=f"http://127.0.0.1/ok/{replica}"
                if links_differ
                else "http://127.0.0.1/ok",
                cancel_url="http://127.0.0.1/no",
            ),
        )
        for replica in "ab"
    ]


async def purchases_at_once(
    books: list[Ledger], account_id: str, credits: tuple[int, int]
) -> list[object]:
    """Each ledger asks for its credits under the one key ``k`` at once: the answers and
    the refusals, in the order of ``books``."""
    return await asyncio.gather(
        *(
            ledger.request_checkout(
                RequestCheckout(account_id=account_id, credits=asked, idempotency_key="k")
            )
            for ledger, asked in zip(books, credits, strict=True)
        ),
        return_exceptions=True,
    )


def statuses(standin: RunningStandin, sessions: set[str]) -> dict[str, Any]:
    return {session: standin.state.sessions[session].data["status"] for session in sessions}


async def test_a_purchase_refused_for_its_reused_key_expires_the_session_it_made(
    pool: asyncpg.Pool, ledgers: Ledgers, standin: RunningStandin, gateway: StripeGateway
) -> None:
    """One key sent for 500 and for 600 credits at once: both sessions are made, one is
    recorded and the other purchase refused (422). The refused one's session was left open."""
    books = two_replicas(ledgers, pool, AllAskBeforeAnyRecords(gateway, 2))
    account_id = unique("acct")
    await open_account(books[0], account_id)
    made_before = set(standin.state.sessions)

    outcomes = await purchases_at_once(books, account_id, (500, 600))

    [started] = [o for o in outcomes if isinstance(o, CheckoutStarted)]
    assert [type(o) for o in outcomes if o is not started] == [IdempotencyKeyReused]
    made = set(standin.state.sessions) - made_before
    [refused] = made - {started.session_id}
    assert statuses(standin, made) == {started.session_id: "open", refused: "expired"}


async def test_retries_of_a_mispriced_purchase_at_once_leave_one_session_payable(
    pool: asyncpg.Pool, ledgers: Ledgers, standin: RunningStandin, gateway: StripeGateway
) -> None:
    """After a 502 'CheckoutMispriced', two retries under its key at once each ask Stripe
    for a session of their own (``_after_mispriced``); one is recorded and answers both.
    The other's session was left open, payable by nobody who knew its address."""
    books = two_replicas(ledgers, pool, AllAskBeforeAnyRecords(gateway, 2))
    account_id = unique("acct")
    await open_account(books[0], account_id)
    purchase = RequestCheckout(account_id=account_id, credits=500, idempotency_key="k")
    made_before = set(standin.state.sessions)
    standin.state.misprice_count, standin.state.misprice_amount_total = 1, 900
    try:
        with pytest.raises(CheckoutMispriced):
            await books[0].request_checkout(purchase)
    finally:
        standin.state.misprice_count, standin.state.misprice_amount_total = 0, None

    answers = await asyncio.gather(*(ledger.request_checkout(purchase) for ledger in books))

    assert answers[0] == answers[1]
    made = set(standin.state.sessions) - made_before
    assert len(made) == 3  # the mispriced one, and one for each retry
    assert statuses(standin, made) == {
        session: "open" if session == answers[0].session_id else "expired" for session in made
    }


class StripeRefusesTheExpiry(AllAskBeforeAnyRecords):
    """As ``AllAskBeforeAnyRecords``, with the stand-in answering each expiry 500 (its
    injected failure, through the real SDK): the expiry is all that asks Stripe by then."""

    def __init__(self, gateway: StripeGateway, count: int, standin: RunningStandin) -> None:
        super().__init__(gateway, count)
        self.standin = standin
        self.refused = 0

    async def expire_checkout(self, session_id: str) -> None:
        self.standin.state.fail_count = 1
        try:
            await self.gateway.expire_checkout(session_id)
        finally:
            self.refused += self.standin.state.fail_count == 0
            self.standin.state.fail_count = 0


@pytest.mark.parametrize("credits", [(500, 500), (500, 600)], ids=["answered", "refused"])
async def test_stripe_refusing_the_expiry_changes_no_answer(
    pool: asyncpg.Pool,
    ledgers: Ledgers,
    standin: RunningStandin,
    gateway: StripeGateway,
    credits: tuple[int, int],
) -> None:
    """The session left behind stays payable when Stripe will not expire it, and each
    request keeps its answer, not the expiry's failure: the one that lost the record on a
    replica whose links differ (another Stripe key, another session) the recorded session,
    one for other credits its 422."""
    stripe = StripeRefusesTheExpiry(gateway, 2, standin)
    books = two_replicas(ledgers, pool, stripe, links_differ=True)
    account_id = unique("acct")
    await open_account(books[0], account_id)
    made_before = set(standin.state.sessions)

    outcomes = await purchases_at_once(books, account_id, credits)

    answered = [o for o in outcomes if isinstance(o, CheckoutStarted)]
    others = [type(o) for o in outcomes if not isinstance(o, CheckoutStarted)]
    assert others == ([] if credits[0] == credits[1] else [IdempotencyKeyReused]), outcomes
    assert len({started.session_id for started in answered}) == 1
    made = set(standin.state.sessions) - made_before
    assert len(made) == 2
    assert stripe.refused == 1  # the expiry of the session not recorded failed
    assert set(statuses(standin, made).values()) == {"open"}
