"""The stand-in's checkout half: payments, signed webhooks, refunds, disputes, the event log.

Everything runs over real HTTP: the stand-in POSTs events to a small receiving app started
here, and refunds go through the real stripe SDK.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import stripe

from stripe_standin import RunningStandin, run_standin
from tests.support.servers import bind_free_port
from tests.support.standin import (
    CANCEL_URL,
    SECRET,
    SUCCESS_URL,
    Receiver,
    stripe_client,
    stripe_receiver,
    top_up,
    verify,
)
from tests.support.waiting import until


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    async with stripe_receiver() as recorder:
        yield recorder


@pytest.fixture(scope="module")
async def standin(receiver: Receiver) -> AsyncIterator[RunningStandin]:
    # As in the ledger's tests: the stand-in starts first, the webhook target is set later.
    async with run_standin() as running:
        running.configure_webhooks(receiver.url, SECRET)
        yield running


@pytest.fixture
async def client(standin: RunningStandin) -> AsyncIterator[stripe.StripeClient]:
    async with stripe_client(standin.base_url) as client:
        yield client


@pytest.fixture
async def http(standin: RunningStandin) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=standin.base_url) as http_client:
        yield http_client


async def paid_session(
    client: stripe.StripeClient, http: httpx.AsyncClient, credits: int = 1000, **extra: Any
) -> dict[str, Any]:
    session = await client.v1.checkout.sessions.create_async(params=top_up(credits, **extra))
    response = await http.post(f"/c/pay/{session.id}/pay")
    assert response.status_code == 200
    return dict(response.json())


async def test_pay_delivers_one_signed_completed_event(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    pi_data = {"metadata": {"account_id": "acct_1", "credits": "1200"}}
    paid = await paid_session(client, http, 1200, payment_intent_data=pi_data)

    [event_id] = paid["delivered"]
    [item] = receiver.bodies_for(event_id)  # delivered before /pay answered, exactly once
    completed = [
        r.event["id"]
        for r in receiver.received
        if r.event["type"] == "checkout.session.completed"
        and r.event["data"]["object"]["id"] == paid["session"]["id"]
    ]
    assert completed == [event_id]
    event = verify(item)
    assert (event.id, event.type, event.object) == (event_id, "checkout.session.completed", "event")
    assert event.livemode is False
    session = event.data.object
    assert (session.id, session.status, session.payment_status) == (
        paid["session"]["id"],
        "complete",
        "paid",
    )
    assert session.payment_intent.startswith("pi_")
    assert session.amount_total == 1200
    assert item.headers["content-type"] == "application/json; charset=utf-8"
    assert item.headers["user-agent"] == "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
    with pytest.raises(stripe.SignatureVerificationError):
        verify(item, "whsec_some_other_secret")

    intent = await client.v1.payment_intents.retrieve_async(session.payment_intent)
    assert (intent.status, intent.amount, intent.currency) == ("succeeded", 1200, "usd")
    assert isinstance(intent.latest_charge, str)
    charge = await client.v1.charges.retrieve_async(intent.latest_charge)
    assert (charge.amount, charge.amount_captured, charge.amount_refunded) == (1200, 1200, 0)
    assert (charge.paid, charge.refunded, charge.disputed, charge.status) == (
        True,
        False,
        False,
        "succeeded",
    )
    assert charge.payment_intent == session.payment_intent
    assert charge.metadata is not None
    assert charge.metadata.to_dict() == pi_data["metadata"]


async def test_browser_pay_redirects_to_the_success_url(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    session = await client.v1.checkout.sessions.create_async(params=top_up())

    response = await http.post(
        f"/c/pay/{session.id}/pay", headers={"Accept": "text/html,application/xhtml+xml"}
    )

    assert response.status_code == 303
    assert response.headers["location"] == SUCCESS_URL.replace("{CHECKOUT_SESSION_ID}", session.id)
    again = await http.post(f"/c/pay/{session.id}/pay", headers={"Accept": "text/html"})
    assert again.status_code == 400
    assert again.headers["content-type"].startswith("text/html")


async def test_browser_cancel_redirects_and_leaves_the_session_open(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    session = await client.v1.checkout.sessions.create_async(params=top_up())

    response = await http.post(f"/c/pay/{session.id}/cancel", headers={"Accept": "text/html"})

    assert (response.status_code, response.headers["location"]) == (303, CANCEL_URL)
    fetched = await client.v1.checkout.sessions.retrieve_async(session.id)
    assert fetched.status == "open"


async def test_paying_twice_or_after_expiry_is_a_stripe_error(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    paid = await paid_session(client, http)
    expired = await client.v1.checkout.sessions.create_async(params=top_up())
    await http.post(f"/c/pay/{expired.id}/expire")

    for session_id in (paid["session"]["id"], expired.id):
        response = await http.post(f"/c/pay/{session_id}/pay")
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"


async def _types_and_sessions(receiver: Receiver, event_ids: list[str]) -> list[tuple[str, str]]:
    events = [verify(receiver.bodies_for(event_id)[0]) for event_id in event_ids]
    return [(event.type, event.data.object.payment_status) for event in events]


async def test_async_payment_success_sequence(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    session = await client.v1.checkout.sessions.create_async(params=top_up())

    response = await http.post(f"/c/pay/{session.id}/pay?mode=async")

    delivered = response.json()["delivered"]
    assert await _types_and_sessions(receiver, delivered) == [
        ("checkout.session.completed", "unpaid"),
        ("checkout.session.async_payment_succeeded", "paid"),
    ]
    intent = await client.v1.payment_intents.retrieve_async(
        response.json()["session"]["payment_intent"]
    )
    assert intent.status == "succeeded"
    assert isinstance(intent.latest_charge, str)


async def test_async_payment_failure_sequence(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    session = await client.v1.checkout.sessions.create_async(params=top_up())

    # As a form field, the way a browser form would send it.
    response = await http.post(
        f"/c/pay/{session.id}/pay", data={"mode": "async", "outcome": "fail"}
    )

    body = response.json()
    assert await _types_and_sessions(receiver, body["delivered"]) == [
        ("checkout.session.completed", "unpaid"),
        ("checkout.session.async_payment_failed", "unpaid"),
    ]
    assert (body["session"]["status"], body["session"]["payment_status"]) == ("complete", "unpaid")
    intent = await client.v1.payment_intents.retrieve_async(body["session"]["payment_intent"])
    assert intent.latest_charge is None
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.refunds.create_async(params={"payment_intent": intent.id})


async def test_expire_delivers_session_expired(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    session = await client.v1.checkout.sessions.create_async(params=top_up())

    response = await http.post(f"/c/pay/{session.id}/expire")

    [event_id] = response.json()["delivered"]
    event = verify(receiver.bodies_for(event_id)[0])
    assert event.type == "checkout.session.expired"
    assert (event.data.object.id, event.data.object.status) == (session.id, "expired")


async def test_partial_refunds_accumulate_and_over_refunding_fails(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    paid = await paid_session(client, http, 1000)
    pi = paid["session"]["payment_intent"]

    first = await client.v1.refunds.create_async(params={"payment_intent": pi, "amount": 300})
    second = await client.v1.refunds.create_async(
        params={"payment_intent": pi, "amount": 200, "reason": "requested_by_customer"},
        options={"idempotency_key": "refund-200"},
    )
    replayed = await client.v1.refunds.create_async(
        params={"payment_intent": pi, "amount": 200, "reason": "requested_by_customer"},
        options={"idempotency_key": "refund-200"},
    )

    assert (first.object, first.amount, first.status, first.payment_intent) == (
        "refund",
        300,
        "succeeded",
        pi,
    )
    assert replayed.id == second.id
    refunded = [
        verify(item)
        for item in receiver.received
        if item.event["type"] == "charge.refunded"
        and item.event["data"]["object"]["payment_intent"] == pi
    ]
    assert [(e.data.object.amount_refunded, e.data.object.refunded) for e in refunded] == [
        (300, False),
        (500, False),
    ]
    assert refunded[0].data.object.id == first.charge
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.refunds.create_async(params={"payment_intent": pi, "amount": 501})
    assert caught.value.param == "amount"
    assert "greater than" in (caught.value.user_message or "")

    rest = await client.v1.refunds.create_async(params={"charge": str(first.charge)})
    assert rest.amount == 500
    charge = await client.v1.charges.retrieve_async(str(first.charge))
    assert (charge.amount_refunded, charge.refunded) == (1000, True)


async def test_a_refund_that_fails_gives_the_charge_its_refundable_money_back(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    paid = await paid_session(client, http, 1000)
    pi = paid["session"]["payment_intent"]
    refund = await client.v1.refunds.create_async(params={"payment_intent": pi, "amount": 400})

    failed = await http.post(
        f"/_standin/refunds/{refund.id}/fail", json={"failure_reason": "lost_or_stolen_card"}
    )

    assert failed.status_code == 200, failed.text
    answer = failed.json()
    assert (answer["refund"]["status"], answer["held"]) == ("failed", [])
    again = await client.v1.refunds.retrieve_async(refund.id)
    assert (again.status, again.failure_reason) == ("failed", "lost_or_stolen_card")
    charge = await client.v1.charges.retrieve_async(str(refund.charge))
    assert (charge.amount_refunded, charge.refunded) == (0, False)
    told = [
        verify(item)
        for item in receiver.received
        if item.event["data"]["object"].get("id") == refund.id
    ]
    assert [e.type for e in told] == [
        "refund.created",
        "charge.refund.updated",
        "refund.updated",
        "refund.failed",
    ]
    assert [e.id for e in told[1:]] == answer["delivered"]
    assert told[0].data.object.status == "succeeded"
    previous = told[1].data.previous_attributes
    assert previous is not None
    assert previous.to_dict() == {
        "status": "succeeded",
        "failure_reason": None,
    }
    assert {e.data.object.status for e in told[1:]} == {"failed"}
    # Its money can be refunded again; a failed refund cannot fail again.
    whole = await client.v1.refunds.create_async(params={"payment_intent": pi})
    assert whole.amount == 1000
    twice = await http.post(f"/_standin/refunds/{refund.id}/fail")
    assert twice.status_code == 400
    assert "already failed" in twice.json()["error"]["message"]
    unknown = await http.post("/_standin/refunds/re_nope/fail")
    assert unknown.status_code == 404


async def test_refund_of_unknown_payment_intent_is_resource_missing(
    client: stripe.StripeClient,
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.refunds.create_async(params={"payment_intent": "pi_nope"})

    assert (caught.value.code, caught.value.param) == ("resource_missing", "payment_intent")


async def test_dispute_created_and_closed(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    paid = await paid_session(client, http, 800)
    intent = await client.v1.payment_intents.retrieve_async(paid["session"]["payment_intent"])
    charge_id = str(intent.latest_charge)
    await client.v1.refunds.create_async(params={"charge": charge_id, "amount": 100})

    opened = await http.post(
        f"/_standin/charges/{charge_id}/dispute", json={"reason": "fraudulent"}
    )
    dispute = opened.json()["dispute"]
    closed = await http.post(f"/_standin/disputes/{dispute['id']}/close", json={"status": "lost"})

    created_event = verify(receiver.bodies_for(opened.json()["delivered"][0])[0])
    closed_event = verify(receiver.bodies_for(closed.json()["delivered"][0])[0])
    assert created_event.type == "charge.dispute.created"
    assert (created_event.data.object.amount, created_event.data.object.status) == (
        700,
        "needs_response",
    )
    assert (created_event.data.object.charge, created_event.data.object.reason) == (
        charge_id,
        "fraudulent",
    )
    assert closed_event.type == "charge.dispute.closed"
    assert (closed_event.data.object.id, closed_event.data.object.status) == (
        dispute["id"],
        "lost",
    )
    charge = await client.v1.charges.retrieve_async(charge_id)
    assert charge.disputed is True


async def test_resend_delivers_the_same_event_again(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    paid = await paid_session(client, http)
    [event_id] = paid["delivered"]

    answers = [(await http.post(f"/_standin/events/{event_id}/resend")).json() for _ in range(3)]

    assert [answer["status"] for answer in answers] == [200, 200, 200]
    items = receiver.bodies_for(event_id)
    assert len(items) == 4
    assert {item.body for item in items} == {items[0].body}
    assert all(verify(item).id == event_id for item in items)
    stored = (await http.get(f"/_standin/events/{event_id}")).json()
    assert stored == items[0].event
    listed = (await http.get("/_standin/events", params={"type": stored["type"]})).json()
    assert event_id in [event["id"] for event in listed["data"]]


async def test_a_failed_delivery_is_retried_in_the_background(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.fail_count = 1

    paid = await paid_session(client, http)
    [event_id] = paid["delivered"]

    async def retried() -> bool:
        deliveries = (await http.get("/_standin/deliveries")).json()["data"]
        mine = [(d["attempt"], d["status"]) for d in deliveries if d["event_id"] == event_id]
        return mine == [(1, 500), (2, 200)]

    await until(retried, seconds=3)
    assert len(receiver.bodies_for(event_id)) == 2


async def test_without_a_webhook_url_events_are_only_recorded(
    client: stripe.StripeClient,
    standin: RunningStandin,
    http: httpx.AsyncClient,
    receiver: Receiver,
) -> None:
    standin.configure_webhooks(None, None)
    try:
        paid = await paid_session(client, http)
    finally:
        standin.configure_webhooks(receiver.url, SECRET)

    [event_id] = paid["delivered"]
    assert receiver.bodies_for(event_id) == []
    assert (await http.get(f"/_standin/events/{event_id}")).status_code == 200
    deliveries = (await http.get("/_standin/deliveries")).json()["data"]
    assert [d for d in deliveries if d["event_id"] == event_id] == []


async def test_an_unreachable_target_is_recorded_and_retried() -> None:
    closed = bind_free_port()  # bound, never listening: connections are refused
    url = f"http://127.0.0.1:{closed.getsockname()[1]}/webhook"
    try:
        async with (
            run_standin(
                webhook_url=url, webhook_secret=SECRET, webhook_retry_delays=(0.01, 0.02)
            ) as standin,
            httpx.AsyncClient(base_url=standin.base_url) as http,
        ):
            async with stripe_client(standin.base_url) as client:
                paid = await paid_session(client, http)

            async def three_attempts() -> bool:
                return len((await http.get("/_standin/deliveries")).json()["data"]) == 3

            await until(three_attempts, seconds=3)
            deliveries = (await http.get("/_standin/deliveries")).json()["data"]
    finally:
        closed.close()

    assert [(d["event_id"], d["attempt"], d["status"]) for d in deliveries] == [
        (paid["delivered"][0], 1, None),
        (paid["delivered"][0], 2, None),
        (paid["delivered"][0], 3, None),
    ]
    assert all(d["error"] for d in deliveries)
