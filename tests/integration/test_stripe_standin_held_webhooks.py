"""Held webhooks: a test records events without delivering them, then releases them in any order.

This is how the ledger's tests deliver a refund or a dispute before the
``checkout.session.completed`` it belongs to, as Stripe may.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from stripe_standin import RunningStandin, run_standin
from stripe_standin.webhooks import NotHeld
from tests.support.standin import SECRET, Receiver, stripe_client, stripe_receiver, top_up, verify

COMPLETED = "checkout.session.completed"


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    async with stripe_receiver() as recorder:
        yield recorder


@pytest.fixture(scope="module")
async def standin(receiver: Receiver) -> AsyncIterator[RunningStandin]:
    async with run_standin(webhook_url=receiver.url, webhook_secret=SECRET) as running:
        yield running


@pytest.fixture(autouse=True)
async def hold_nothing_afterwards(standin: RunningStandin) -> AsyncIterator[None]:
    yield
    standin.hold_webhooks([])
    if standin.held_events:
        await standin.release_webhooks()


@pytest.fixture
async def client(standin: RunningStandin) -> AsyncIterator[stripe.StripeClient]:
    async with stripe_client(standin.base_url) as sdk:
        yield sdk


@pytest.fixture
async def http(standin: RunningStandin) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=standin.base_url) as http_client:
        yield http_client


async def pay(client: stripe.StripeClient, http: httpx.AsyncClient) -> dict[str, Any]:
    session = await client.v1.checkout.sessions.create_async(params=top_up())
    response = await http.post(f"/c/pay/{session.id}/pay")
    assert response.status_code == 200, response.text
    return dict(response.json())


def arrived(receiver: Receiver, event_ids: list[str]) -> list[str]:
    """Which of these events arrived, in arrival order."""
    wanted = set(event_ids)
    return [item.event["id"] for item in receiver.received if item.event["id"] in wanted]


async def test_a_refund_is_delivered_before_the_completed_event_it_belongs_to(
    standin: RunningStandin,
    client: stripe.StripeClient,
    http: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    standin.hold_webhooks([COMPLETED])

    paid = await pay(client, http)
    refund = await client.v1.refunds.create_async(
        params={"payment_intent": paid["session"]["payment_intent"], "amount": 400}
    )
    [completed_id] = paid["held"]
    assert paid["delivered"] == []
    assert [e.id for e in standin.held_events] == [completed_id]
    assert receiver.bodies_for(completed_id) == []

    [attempt] = await standin.release_webhooks()

    assert (attempt.event_id, attempt.status) == (completed_id, 200)
    assert standin.held_events == []
    mine = [
        verify(item)
        for item in receiver.received
        if item.object.get("payment_intent") == paid["session"]["payment_intent"]
    ]
    assert [e.type for e in mine] == ["charge.refunded", "refund.created", COMPLETED]
    assert mine[0].data.object.amount_refunded == refund.amount == 400
    assert mine[1].data.object.id == refund.id
    assert mine[2].data.object.payment_status == "paid"


async def test_a_dispute_is_delivered_before_its_payment(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    held = await http.post("/_standin/webhooks/hold", json={"types": [COMPLETED]})
    assert held.json() == {"types": [COMPLETED], "held": []}

    paid = await pay(client, http)
    intent = await client.v1.payment_intents.retrieve_async(paid["session"]["payment_intent"])
    opened = (await http.post(f"/_standin/charges/{intent.latest_charge}/dispute")).json()
    released = (await http.post("/_standin/webhooks/release")).json()

    assert [(r["id"], r["type"], r["status"]) for r in released["released"]] == [
        (paid["held"][0], COMPLETED, 200)
    ]
    assert released["held"] == []
    assert arrived(receiver, opened["delivered"] + paid["held"]) == [
        *opened["delivered"],
        *paid["held"],
    ]


async def test_held_events_are_released_over_http_in_the_order_given(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await http.post("/_standin/webhooks/hold", json={"types": [COMPLETED, "charge.refunded"]})
    first = await pay(client, http)
    second = await pay(client, http)
    await client.v1.refunds.create_async(
        params={"payment_intent": first["session"]["payment_intent"]}
    )
    listed = (await http.get("/_standin/webhooks/held")).json()
    refunded_id = listed["held"][-1]["id"]

    out_of_order = [refunded_id, second["held"][0]]
    released = (await http.post("/_standin/webhooks/release", json={"ids": out_of_order})).json()
    rest = (await http.post("/_standin/webhooks/release", json={"ids": first["held"]})).json()

    assert [h["type"] for h in listed["held"]] == [COMPLETED, COMPLETED, "charge.refunded"]
    assert [r["id"] for r in released["released"]] == out_of_order
    assert released["held"] == [{"id": first["held"][0], "type": COMPLETED}]
    assert rest["held"] == []
    assert arrived(receiver, [*out_of_order, *first["held"]]) == [*out_of_order, *first["held"]]


async def test_releasing_what_is_not_held_delivers_nothing(
    standin: RunningStandin, client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    standin.hold_webhooks(["*"])
    paid = await pay(client, http)
    attempts_before = len(standin.state.webhooks.attempts)

    response = await http.post(
        "/_standin/webhooks/release", json={"ids": [*paid["held"], "evt_nope"]}
    )
    twice = await http.post(
        "/_standin/webhooks/release", json={"ids": [paid["held"][0], paid["held"][0]]}
    )

    assert response.status_code == 400
    assert "evt_nope" in response.json()["error"]["message"]
    assert twice.status_code == 400
    assert len(standin.state.webhooks.attempts) == attempts_before
    assert [e.id for e in standin.held_events] == paid["held"]
    with pytest.raises(NotHeld):
        await standin.release_webhooks(["evt_nope"])


async def test_holding_nothing_again_delivers_at_once(
    standin: RunningStandin,
    client: stripe.StripeClient,
    http: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    standin.hold_webhooks([COMPLETED])
    held = await pay(client, http)
    standin.hold_webhooks([])

    delivered = await pay(client, http)

    assert (held["delivered"], len(held["held"])) == ([], 1)
    assert (len(delivered["delivered"]), delivered["held"]) == (1, [])
    assert len(receiver.bodies_for(delivered["delivered"][0])) == 1
    assert [e.id for e in standin.held_events] == held["held"]  # still held until released


async def test_held_events_stay_held_across_a_restart(receiver: Receiver, tmp_path: Path) -> None:
    state_file = tmp_path / "standin.json"
    async with (
        run_standin(
            webhook_url=receiver.url, webhook_secret=SECRET, state_file=state_file
        ) as first,
        stripe_client(first.base_url) as client,
        httpx.AsyncClient(base_url=first.base_url) as http,
    ):
        first.hold_webhooks([COMPLETED])
        paid = await pay(client, http)

    async with run_standin(state_file=state_file) as second:
        assert [e.id for e in second.held_events] == paid["held"]
        assert second.state.webhooks.held_types == {COMPLETED}
        [attempt] = await second.release_webhooks()

    assert attempt.status == 200
    assert verify(receiver.bodies_for(paid["held"][0])[0]).type == COMPLETED
