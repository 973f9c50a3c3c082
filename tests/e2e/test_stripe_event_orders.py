"""One session's Stripe events, in many orders and duplicated, end the same.

For each scenario the stand-in makes the events itself (a payment, refunds, disputes, an
expiry), held back; then they are delivered through the service's real webhook, signed
as Stripe signs, in a shuffled order, some of them twice, with a monthly reset somewhere
in between. The account's balances, the purchase's status and what the statement's lines
add up to must be the same for every order, and what the scenario is worth.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import stripe

from api.access.tokens import Scope
from api.services import Services
from stripe_standin import RunningStandin
from stripe_standin.events import Event
from tests.conftest import unique
from tests.e2e.conftest import Customer
from tests.e2e.test_checkout_flow import (
    Purchase,
    latest_charge,
    pay,
    press,
    purchase,
    stripe_client,
)
from tests.support.events import caught_up
from tests.support.ledger import open_account
from tests.support.stripe_events import new_event_id, signature

__all__ = ["stripe_client"]  # the fixture, used here

CREDITS = 1000  # at 1 cent a credit: 1000 cents
ORDERS = 5  # shuffled orders per scenario, besides the natural and the reversed one


@dataclass
class Session:
    """A paid (or not) purchase whose events the stand-in holds."""

    customer: Customer
    bought: Purchase
    intent: str | None
    writer: dict[str, str]  # an internal service's headers, to spend and reset


Step = Callable[[httpx.AsyncClient, RunningStandin, stripe.StripeClient, Session], Awaitable[None]]


def refund(amount: int) -> Step:
    async def step(_: Any, __: Any, client: stripe.StripeClient, session: Session) -> None:
        params: dict[str, Any] = {"payment_intent": session.intent, "amount": amount}
        await client.v1.refunds.create_async(params=params)  # type: ignore[arg-type]

    return step


def refund_fails(n: int) -> Step:
    """The session's ``n``-th refund fails (the stand-in's control, as the bank returning it)."""

    async def step(http: httpx.AsyncClient, standin: RunningStandin, _: Any, s: Session) -> None:
        ours = [r for r in standin.state.refunds.values() if r["payment_intent"] == s.intent]
        failed = await http.post(f"{standin.base_url}/_standin/refunds/{ours[n]['id']}/fail")
        assert failed.status_code == 200, failed.text

    return step


def dispute(status: str = "needs_response", amount: int | None = None) -> Step:
    async def step(http: httpx.AsyncClient, standin: RunningStandin, _: Any, s: Session) -> None:
        assert s.intent is not None
        charge = await latest_charge(http, standin, s.intent)
        body = {"status": status} | ({} if amount is None else {"amount": amount})
        opened = await http.post(f"{standin.base_url}/_standin/charges/{charge}/dispute", json=body)
        assert opened.status_code == 200, opened.text

    return step


def dispute_moves(status: str, **more: int) -> Step:
    """The session's dispute updated (an inquiry escalated, an appeal reviewed), closed
    (``more``: ``reinstated``, what a lost one gives back all the same), or its loss appealed
    (``appealed``)."""

    async def step(http: httpx.AsyncClient, standin: RunningStandin, _: Any, s: Session) -> None:
        [found] = [d for d in standin.state.disputes.values() if d["payment_intent"] == s.intent]
        action = {"won": "close", "lost": "close", "warning_closed": "close"}.get(status, "update")
        action = "appeal" if status == "appealed" else action
        moved = await http.post(
            f"{standin.base_url}/_standin/disputes/{found['id']}/{action}",
            json={} if action == "appeal" else {"status": status, **more},
        )
        assert moved.status_code == 200, moved.text

    return step


@dataclass(frozen=True)
class Scenario:
    name: str
    pay: dict[str, str] | None  # the hosted page's options; None: the session expires
    steps: tuple[Step, ...]
    topup: int  # what the purchase leaves on the account
    status: str
    spend_first: int = 0  # spent as soon as the payment lands, before the rest is delivered


SCENARIOS = [
    Scenario("paid", {}, (), CREDITS, "paid"),
    Scenario("expired", None, (), 0, "expired"),
    Scenario("refunded in three parts", {}, (refund(300), refund(200), refund(500)), 0, "refunded"),
    Scenario("partly refunded", {}, (refund(300), refund(150)), 550, "paid"),
    Scenario(
        "refunded in full, the refund failed", {}, (refund(1000), refund_fails(0)), CREDITS, "paid"
    ),
    Scenario(
        "refunded, the refund failed, refunded again",
        {},
        (refund(400), refund_fails(0), refund(300), refund(200)),
        500,
        "paid",
    ),
    Scenario(
        "spent, refunded, the refund failed",
        {},
        (refund(600), refund_fails(0)),
        200,
        "paid",
        spend_first=1800,
    ),
    Scenario("chargeback won", {}, (dispute(), dispute_moves("won")), CREDITS, "paid"),
    Scenario("chargeback lost", {}, (dispute(), dispute_moves("lost")), 0, "paid"),
    Scenario(
        "refund, then a chargeback of the rest, lost",
        {},
        (refund(400), dispute(), dispute_moves("lost")),
        0,
        "paid",
    ),
    Scenario(
        "an inquiry escalated, then won",
        {},
        (
            dispute("warning_needs_response"),
            dispute_moves("needs_response"),
            dispute_moves("won"),
        ),
        CREDITS,
        "paid",
    ),
    Scenario("an inquiry closed", {}, (dispute("warning_needs_response"),), CREDITS, "paid"),
    Scenario(
        "chargeback lost, appealed, won",
        {},
        (
            dispute(),
            dispute_moves("lost"),
            dispute_moves("appealed"),
            dispute_moves("appeal_under_review"),
            dispute_moves("won"),
        ),
        CREDITS,
        "paid",
    ),
    Scenario(
        "chargeback lost, appealed, lost again",
        {},
        (
            dispute(),
            dispute_moves("lost"),
            dispute_moves("appealed"),
            dispute_moves("appeal_under_review"),
            dispute_moves("lost"),
        ),
        0,
        "paid",
    ),
    # An issuer may dispute the whole charge after a partial refund; lost, Stripe gives back
    # the refunded part (funds_reinstated, the status still lost): nothing is left to keep.
    Scenario(
        "refund, a chargeback of the whole charge, lost but the refund reinstated",
        {},
        (refund(400), dispute(amount=CREDITS), dispute_moves("lost", reinstated=400)),
        0,
        "paid",
    ),
    Scenario(
        "refund, a chargeback of the whole charge, won",
        {},
        (refund(400), dispute(amount=CREDITS), dispute_moves("won")),
        600,
        "paid",
    ),
    Scenario(
        "an inquiry, refunded in part, escalated and lost",
        {},
        (
            dispute("warning_needs_response"),
            refund(300),
            dispute_moves("needs_response"),
            dispute_moves("lost"),
        ),
        0,
        "paid",
    ),
    Scenario(
        "spent, chargeback lost, appealed, won",
        {},
        (dispute(), dispute_moves("lost"), dispute_moves("appealed"), dispute_moves("won")),
        200,
        "paid",
        spend_first=1800,
    ),
    Scenario("delayed, then refunded", {"mode": "async"}, (refund(250),), 750, "paid"),
    Scenario("delayed, failed", {"mode": "async", "outcome": "fail"}, (), 0, "failed"),
    # 1,000 of allowance and 800 of the top-up spent: what is taken back then is debt.
    Scenario("spent, then refunded", {}, (refund(600),), -400, "paid", spend_first=1800),
    Scenario(
        "spent, then chargeback lost",
        {},
        (dispute(), dispute_moves("lost")),
        -800,
        "paid",
        spend_first=1800,
    ),
]


@pytest.fixture
def everything_held(standin: RunningStandin) -> Any:
    standin.hold_webhooks(["*"])
    yield
    standin.hold_webhooks([])


async def new_customer(services: Services) -> Customer:
    account_id = unique("acct")
    await open_account(services.ledger, account_id, 1000)
    issued = await services.tokens.issue(Scope.CREDITS, account_id=account_id)
    return Customer(account_id, issued.secret)


async def held_session(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    client: stripe.StripeClient,
    services: Services,
    scenario: Scenario,
    writer: dict[str, str],
) -> tuple[Session, list[Event]]:
    """A session the scenario played at the stand-in, and its events, none delivered."""
    customer = await new_customer(services)
    bought = await purchase(http, customer, CREDITS)
    intent = None
    if scenario.pay is None:
        expired = await press(http, bought, "expire")
        assert expired.status_code == 200, expired.text
    else:
        answer = await pay(http, bought, **scenario.pay)
        intent = answer["session"]["payment_intent"]
    session = Session(customer, bought, intent, writer)
    for step in scenario.steps:
        await step(http, standin, client, session)
    ours = [e for e in standin.held_events if _about(e) in (bought.session_id, intent)]
    return session, ours


def _about(event: Event) -> str | None:
    obj = event.as_dict()["data"]["object"]
    return str(obj["id"]) if obj["object"] == "checkout.session" else obj.get("payment_intent")


def _paid_first(events: list[Event]) -> list[Event]:
    """The events with the one that pays first (the spend follows it)."""
    paying = [e for e in events if e.as_dict()["data"]["object"].get("payment_status") == "paid"]
    return paying + [e for e in events if e not in paying]


async def deliver_signed(http: httpx.AsyncClient, body: str) -> httpx.Response:
    """A delivery of ``body`` the test made, signed as Stripe signs."""
    headers = {"Content-Type": "application/json", "Stripe-Signature": signature(body)}
    return await http.post("/v1/stripe/webhook", content=body.encode(), headers=headers)


def orders(scenario: Scenario, events: list[Event], rng: random.Random) -> list[list[Event]]:
    """The natural order, the reversed one, and shuffled ones (the payment first if a spend
    must follow it)."""
    fixed = 1 if scenario.spend_first else 0
    events = _paid_first(events) if fixed else events
    head, tail = events[:fixed], events[fixed:]
    found = [events, head + tail[::-1]]
    for _ in range(ORDERS):
        shuffled = tail[:]
        rng.shuffle(shuffled)
        found.append(head + shuffled)
    return found


async def deliver(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    session: Session,
    scenario: Scenario,
    order: list[Event],
    rng: random.Random,
) -> list[str]:
    """Each event as the stand-in delivers it, some twice, a monthly reset somewhere: what
    was done, in order."""
    plan: list[Event | str] = list(order)
    for event in order:
        if rng.random() < 0.4:  # a redelivery, at once or later on
            plan.insert(rng.randrange(plan.index(event) + 1, len(plan) + 1), event)
    after_spend = 1 if scenario.spend_first else 0  # the allowance spent is not given back
    plan.insert(rng.randrange(after_spend, len(plan) + 1), "reset")
    delivered: set[str] = set()
    for step in plan:
        if step == "reset":
            await monthly_reset(http, session)
            continue
        assert isinstance(step, Event)
        if step.id in delivered:
            attempt = await standin.state.webhooks.attempt(step)
            assert attempt.status == 200, attempt.error
            continue
        [attempt] = await standin.release_webhooks([step.id])
        assert attempt.status == 200, attempt.error
        delivered.add(step.id)
        if scenario.spend_first and step is order[0]:
            await spend(http, session, scenario.spend_first)
    return [step if isinstance(step, str) else step.type for step in plan]


async def spend(http: httpx.AsyncClient, session: Session, amount: int) -> None:
    spent = await http.post(
        f"/v1/accounts/{session.customer.account_id}/spend",
        json={"amount": amount, "reason": "work"},
        headers=session.writer | {"Idempotency-Key": unique("spend")},
    )
    assert spent.status_code == 200, spent.text


async def monthly_reset(http: httpx.AsyncClient, session: Session) -> None:
    reset = await http.post(
        f"/v1/accounts/{session.customer.account_id}/monthly-reset",
        json={"period": "2099-01"},
        headers=session.writer,
    )
    assert reset.status_code == 200, reset.text


async def views_caught_up(services: Services) -> None:
    """Every view past every event committed so far. (``caught_up`` alone may stop short:
    the watermark dips for a moment when a transaction of another database on the server
    ends, and the views then wait for the projector's next look.)"""
    last = await services.pool.fetchval("SELECT max(notification_id) FROM stored_events")
    while True:
        await caught_up(services.store)
        views = await services.pool.fetchval("SELECT min(position) FROM projection_positions")
        if views >= last:
            return
        await asyncio.sleep(0.01)


async def outcome(http: httpx.AsyncClient, services: Services, session: Session) -> dict[str, Any]:
    """What the customer sees: balances, the purchase, and the statement's lines summed."""
    await views_caught_up(services)
    headers = session.customer.headers
    credits = (await http.get("/v1/credits", headers=headers)).json()
    [bought] = (await http.get("/v1/credits/purchases", headers=headers)).json()["data"]
    lines = (await http.get("/v1/credits/transactions", headers=headers)).json()["data"]
    net: dict[str, int] = {}
    for line in lines:
        # What a failed refund gives back is the refunds' (its clawback came first or never).
        kind = "refunds" if line["description"].startswith("Refund") else line["type"]
        net[kind] = net.get(kind, 0) + line["amount"]
    return {
        "balances": {k: credits[k] for k in ("balance", "allowance_remaining", "topup_balance")},
        "purchase": {k: bought[k] for k in ("status", "credits")},
        "statement": sum(line["amount"] for line in lines),
        "purchased": net.get("CreditsPurchased", 0),
        "clawed back": net.get("refunds", 0),
        "disputes took": net.get("CreditsReversed", 0) + net.get("CreditsRestored", 0),
    }


@pytest.mark.usefixtures("everything_held")
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_any_order_of_a_sessions_events_ends_the_same(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    stripe_client: stripe.StripeClient,
    services: Services,
    writer_headers: dict[str, str],
    scenario: Scenario,
) -> None:
    rng = random.Random(scenario.name)
    play = (http, standin, stripe_client, services, scenario, writer_headers)
    session, events = await held_session(*play)
    template = [e.type for e in events]
    seen: list[tuple[dict[str, Any], list[str]]] = []
    for order in orders(scenario, events, rng):
        if seen:  # the first order plays the session made above; the others a fresh one
            session, fresh = await held_session(*play)
            by_type_and_rank = _ranked(fresh)
            order = [by_type_and_rank[key] for key in _keys(order, events)]
        assert sorted(e.type for e in order) == sorted(template)
        done = await deliver(http, standin, session, scenario, order, rng)
        seen.append((await outcome(http, services, session), done))
    first = seen[0][0]
    assert first["balances"]["topup_balance"] == scenario.topup
    assert first["balances"]["allowance_remaining"] == 1000
    assert first["purchase"]["status"] == scenario.status
    assert first["statement"] == first["balances"]["balance"]  # the lines add up
    for found, done in seen[1:]:
        assert found == first, done


def _keys(order: list[Event], events: list[Event]) -> list[tuple[str, int]]:
    """Each event of ``order`` as (its type, its rank among the events of that type)."""
    ranks = _ranked(events)
    return [next(key for key, e in ranks.items() if e is event) for event in order]


def _ranked(events: list[Event]) -> dict[tuple[str, int], Event]:
    counts: dict[str, int] = {}
    ranked = {}
    for event in events:
        counts[event.type] = counts.get(event.type, 0) + 1
        ranked[(event.type, counts[event.type])] = event
    return ranked


@pytest.mark.usefixtures("everything_held")
async def test_a_dispute_told_of_another_amount_in_the_same_status_ends_the_same_in_any_order(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    stripe_client: stripe.StripeClient,
    services: Services,
    writer_headers: dict[str, str],
) -> None:
    """A chargeback of 600 of a 1,000 charge, then its event again with the amount at 1,000
    and the status unchanged (Stripe's disputed amount "can differ" from the charge's; the
    events carry it as it stands). Delivered either way round, the most money told counts:
    the first told was kept, and the account ended 400 or 0 by the order alone."""
    seen = []
    for corrected_first in (False, True):
        customer = await new_customer(services)
        bought = await purchase(http, customer, CREDITS)
        intent = (await pay(http, bought))["session"]["payment_intent"]
        session = Session(customer, bought, intent, writer_headers)
        await dispute(amount=600)(http, standin, stripe_client, session)
        held = [e for e in standin.held_events if _about(e) in (bought.session_id, intent)]
        [created] = [e for e in held if e.type == "charge.dispute.created"]
        corrected = created.as_dict() | {"id": new_event_id(), "type": "charge.dispute.updated"}
        corrected["data"] = {
            "object": corrected["data"]["object"] | {"amount": CREDITS},
            "previous_attributes": {"amount": 600},
        }
        body = json.dumps(corrected)
        released = iter(held)
        if corrected_first:
            [paid_event] = [e for e in held if e.type == "checkout.session.completed"]
            await standin.release_webhooks([paid_event.id])
            released = iter([e for e in held if e is not paid_event])
            answered = await deliver_signed(http, body)
            assert answered.status_code == 200, answered.text
        for event in released:
            [attempt] = await standin.release_webhooks([event.id])
            assert attempt.status == 200, attempt.error
        if not corrected_first:
            answered = await deliver_signed(http, body)
            assert answered.status_code == 200, answered.text
        seen.append(await outcome(http, services, session))

    assert seen[0]["balances"]["topup_balance"] == 0
    assert seen[0] == seen[1]
