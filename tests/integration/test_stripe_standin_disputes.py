"""A dispute's whole life in the stand-in, with the events Stripe sends at each step.

Disputes are opened, moved and closed through the ``/_standin`` controls (Stripe's API
cannot make them either); every event is read as a webhook handler reads it, signature
checked, and the objects are fetched back with the real SDK.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import stripe

from stripe_standin import RunningStandin, run_standin
from tests.support.standin import SECRET, Receiver, stripe_client, stripe_receiver, top_up, verify

DISPUTE_FIELDS = {
    "id",
    "object",
    "amount",
    "currency",
    "charge",
    "payment_intent",
    "status",
    "reason",
    "is_charge_refundable",
    "balance_transactions",
    "created",
    "livemode",
    "metadata",
}


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    async with stripe_receiver() as recorder:
        yield recorder


@pytest.fixture(scope="module")
async def standin(receiver: Receiver) -> AsyncIterator[RunningStandin]:
    async with run_standin(webhook_url=receiver.url, webhook_secret=SECRET) as running:
        yield running


@pytest.fixture
async def client(standin: RunningStandin) -> AsyncIterator[stripe.StripeClient]:
    async with stripe_client(standin.base_url) as sdk:
        yield sdk


@pytest.fixture
async def http(standin: RunningStandin) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=standin.base_url) as http_client:
        yield http_client


async def paid_charge(
    client: stripe.StripeClient, http: httpx.AsyncClient, credits: int = 1000
) -> str:
    """Pay a top-up on the hosted page; the id of its charge."""
    session = await client.v1.checkout.sessions.create_async(params=top_up(credits))
    paid = await http.post(f"/c/pay/{session.id}/pay")
    intent = await client.v1.payment_intents.retrieve_async(
        paid.json()["session"]["payment_intent"]
    )
    return str(intent.latest_charge)


async def control(http: httpx.AsyncClient, path: str, body: dict[str, Any] | None = None) -> Any:
    response = await http.post(f"/_standin/{path}", json=body or {})
    assert response.status_code == 200, response.text
    return response.json()


def events_about(receiver: Receiver, dispute_id: str) -> list[stripe.Event]:
    return [verify(item) for item in receiver.about(dispute_id)]


async def test_a_chargeback_withdraws_the_funds_and_winning_reinstates_them(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    charge_id = await paid_charge(client, http, 1000)
    await client.v1.refunds.create_async(params={"charge": charge_id, "amount": 200})

    opened = await control(http, f"charges/{charge_id}/dispute", {"reason": "product_not_received"})
    dispute_id = opened["dispute"]["id"]
    reviewed = await control(http, f"disputes/{dispute_id}/update", {"status": "under_review"})
    closed = await control(http, f"disputes/{dispute_id}/close", {"status": "won"})

    events = events_about(receiver, dispute_id)
    assert [e.id for e in events] == opened["delivered"] + reviewed["delivered"] + closed[
        "delivered"
    ]
    assert [(e.type, e.data.object.status) for e in events] == [
        ("charge.dispute.created", "needs_response"),
        ("charge.dispute.funds_withdrawn", "needs_response"),
        ("charge.dispute.updated", "under_review"),
        ("charge.dispute.closed", "won"),
        ("charge.dispute.funds_reinstated", "won"),
    ]
    assert all(DISPUTE_FIELDS - set(e.data.object.to_dict()) == set() for e in events)
    created = events[0].data.object.to_dict()
    assert (created["object"], created["amount"], created["currency"]) == ("dispute", 800, "usd")
    assert (created["charge"], created["reason"], created["livemode"]) == (
        charge_id,
        "product_not_received",
        False,
    )
    assert created["payment_intent"].startswith("pi_")
    assert created["is_charge_refundable"] is False
    [withdrawal] = created["balance_transactions"]
    assert (withdrawal["amount"], withdrawal["fee"], withdrawal["net"]) == (-800, 1500, -2300)
    assert events[2].data.previous_attributes.to_dict() == {"status": "needs_response"}
    assert events[3].data.previous_attributes.to_dict() == {"status": "under_review"}
    reinstated = events[4].data.object.to_dict()["balance_transactions"]
    assert [txn["amount"] for txn in reinstated] == [-800, 800]

    dispute = await client.v1.disputes.retrieve_async(dispute_id)
    charge = await client.v1.charges.retrieve_async(charge_id)
    assert dispute.status == "won"
    assert (charge.disputed, charge.dispute) == (True, dispute_id)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.refunds.create_async(params={"charge": charge_id})
    assert caught.value.code == "charge_disputed"


async def test_a_lost_chargeback_sends_no_reinstatement(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    charge_id = await paid_charge(client, http, 600)

    opened = await control(http, f"charges/{charge_id}/dispute", {"amount": 250})
    dispute_id = opened["dispute"]["id"]
    closed = await control(http, f"disputes/{dispute_id}/close", {"status": "lost"})

    assert opened["dispute"]["amount"] == 250
    assert [(e.type, e.data.object.status) for e in events_about(receiver, dispute_id)] == [
        ("charge.dispute.created", "needs_response"),
        ("charge.dispute.funds_withdrawn", "needs_response"),
        ("charge.dispute.closed", "lost"),
    ]
    assert len(closed["dispute"]["balance_transactions"]) == 1


async def test_a_lost_chargeback_appealed_and_won_reinstates_the_funds(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    charge_id = await paid_charge(client, http, 700)
    dispute_id = (await control(http, f"charges/{charge_id}/dispute"))["dispute"]["id"]
    await control(http, f"disputes/{dispute_id}/close", {"status": "lost"})

    appealed = await control(http, f"disputes/{dispute_id}/appeal")
    reviewed = await control(
        http, f"disputes/{dispute_id}/update", {"status": "appeal_under_review"}
    )
    won = await control(http, f"disputes/{dispute_id}/close", {"status": "won"})

    events = events_about(receiver, dispute_id)
    assert [(e.type, e.data.object.status) for e in events] == [
        ("charge.dispute.created", "needs_response"),
        ("charge.dispute.funds_withdrawn", "needs_response"),
        ("charge.dispute.closed", "lost"),
        ("charge.dispute.updated", "appeal_needs_response"),
        ("charge.dispute.updated", "appeal_under_review"),
        ("charge.dispute.closed", "won"),
        ("charge.dispute.funds_reinstated", "won"),
    ]
    assert [e.id for e in events[3:]] == (
        appealed["delivered"] + reviewed["delivered"] + won["delivered"]
    )
    assert events[3].data.previous_attributes.to_dict() == {"status": "lost"}
    assert [t["amount"] for t in won["dispute"]["balance_transactions"]] == [-700, 700]


async def test_an_appeal_moves_only_along_its_own_statuses(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    charge_id = await paid_charge(client, http)
    dispute_id = (await control(http, f"charges/{charge_id}/dispute"))["dispute"]["id"]

    open_appealed = await http.post(f"/_standin/disputes/{dispute_id}/appeal", json={})
    too_soon = await http.post(
        f"/_standin/disputes/{dispute_id}/update", json={"status": "appeal_under_review"}
    )
    await control(http, f"disputes/{dispute_id}/close", {"status": "lost"})
    await control(http, f"disputes/{dispute_id}/appeal")
    back = await http.post(
        f"/_standin/disputes/{dispute_id}/update", json={"status": "under_review"}
    )
    lost = await control(http, f"disputes/{dispute_id}/close", {"status": "lost"})
    unknown = await http.post("/_standin/disputes/dp_nope/appeal", json={})

    assert [r.status_code for r in (open_appealed, too_soon, back, unknown)] == [400] * 3 + [404]
    assert "only a lost chargeback" in open_appealed.json()["error"]["message"]
    assert "an appeal moves only" in back.json()["error"]["message"]
    assert lost["dispute"]["status"] == "lost"
    assert len(lost["dispute"]["balance_transactions"]) == 1  # nothing reinstated


async def test_a_whole_charge_disputed_after_a_partial_refund_is_lost_but_reinstated_in_part(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    """As Stripe's "partially won": the issuer disputes all of a charge partly refunded; the
    dispute closes ``lost`` and the refunded part comes back (``funds_reinstated``)."""
    charge_id = await paid_charge(client, http, 1000)
    await client.v1.refunds.create_async(params={"charge": charge_id, "amount": 400})

    opened = await control(http, f"charges/{charge_id}/dispute", {"amount": 1000})
    dispute_id = opened["dispute"]["id"]
    too_much = await http.post(
        f"/_standin/disputes/{dispute_id}/close", json={"status": "lost", "reinstated": 1000}
    )
    won_in_part = await http.post(
        f"/_standin/disputes/{dispute_id}/close", json={"status": "won", "reinstated": 400}
    )
    closed = await control(
        http, f"disputes/{dispute_id}/close", {"status": "lost", "reinstated": 400}
    )

    assert [too_much.status_code, won_in_part.status_code] == [400, 400]
    assert [(e.type, e.data.object.status) for e in events_about(receiver, dispute_id)] == [
        ("charge.dispute.created", "needs_response"),
        ("charge.dispute.funds_withdrawn", "needs_response"),
        ("charge.dispute.closed", "lost"),
        ("charge.dispute.funds_reinstated", "lost"),
    ]
    assert [t["amount"] for t in closed["dispute"]["balance_transactions"]] == [-1000, 400]


async def test_an_inquiry_withdraws_nothing_can_be_refunded_and_closes_as_warning_closed(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    charge_id = await paid_charge(client, http, 1000)

    opened = await control(
        http, f"charges/{charge_id}/dispute", {"status": "warning_needs_response", "amount": 400}
    )
    dispute_id = opened["dispute"]["id"]
    refund = await client.v1.refunds.create_async(params={"charge": charge_id, "amount": 100})
    await control(http, f"disputes/{dispute_id}/update", {"status": "warning_under_review"})
    refused = await http.post(f"/_standin/disputes/{dispute_id}/close", json={"status": "won"})
    await control(http, f"disputes/{dispute_id}/close", {"status": "warning_closed"})

    assert refund.status == "succeeded"
    assert refused.status_code == 400
    assert "inquiry" in refused.json()["error"]["message"]
    events = events_about(receiver, dispute_id)
    assert [(e.type, e.data.object.status) for e in events] == [
        ("charge.dispute.created", "warning_needs_response"),
        ("charge.dispute.updated", "warning_under_review"),
        ("charge.dispute.closed", "warning_closed"),
    ]
    created = events[0].data.object.to_dict()
    assert (created["amount"], created["is_charge_refundable"]) == (400, True)
    assert created["balance_transactions"] == []
    assert created["payment_method_details"]["card"]["case_type"] == "inquiry"


async def test_an_inquiry_escalated_to_a_chargeback_withdraws_its_funds(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    charge_id = await paid_charge(client, http, 900)
    opened = await control(
        http, f"charges/{charge_id}/dispute", {"status": "warning_needs_response"}
    )
    dispute_id = opened["dispute"]["id"]

    escalated = await control(http, f"disputes/{dispute_id}/update", {"status": "needs_response"})

    events = events_about(receiver, dispute_id)
    assert [(e.type, e.data.object.status) for e in events] == [
        ("charge.dispute.created", "warning_needs_response"),
        ("charge.dispute.updated", "needs_response"),
        ("charge.dispute.funds_withdrawn", "needs_response"),
    ]
    assert events[1].data.previous_attributes.to_dict() == {
        "status": "warning_needs_response",
        "is_charge_refundable": True,
    }
    dispute = escalated["dispute"]
    assert dispute["is_charge_refundable"] is False
    assert [txn["amount"] for txn in dispute["balance_transactions"]] == [-900]
    assert dispute["payment_method_details"]["card"]["case_type"] == "chargeback"
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.refunds.create_async(params={"charge": charge_id})


async def test_a_metadata_change_is_an_update_and_no_change_sends_nothing(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    charge_id = await paid_charge(client, http)
    dispute_id = (await control(http, f"charges/{charge_id}/dispute"))["dispute"]["id"]

    changed = await control(http, f"disputes/{dispute_id}/update", {"metadata": {"case": "7"}})
    same = await control(http, f"disputes/{dispute_id}/update", {"status": "needs_response"})

    assert len(changed["delivered"]) == 1
    assert same["delivered"] == []
    updated = verify(receiver.bodies_for(changed["delivered"][0])[0])
    assert updated.data.object.metadata.to_dict() == {"case": "7"}
    assert updated.data.previous_attributes.to_dict() == {"metadata": {}}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"amount": 1001}, "between 1 and 1000"),
        ({"amount": 0}, "between 1 and 1000"),
        ({"status": "won"}, "Invalid enum value 'won'"),
        ({"reason": "bored"}, "Invalid enum value 'bored'"),
        ({"surprise": True}, "unknown field"),
    ],
)
async def test_a_bad_dispute_is_refused_and_sends_nothing(
    client: stripe.StripeClient,
    http: httpx.AsyncClient,
    standin: RunningStandin,
    body: dict[str, Any],
    message: str,
) -> None:
    charge_id = await paid_charge(client, http, 1000)
    events_before = len(standin.state.webhooks.events)

    response = await http.post(f"/_standin/charges/{charge_id}/dispute", json=body)

    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert len(standin.state.webhooks.events) == events_before


async def test_closed_or_unknown_disputes_cannot_move(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    charge_id = await paid_charge(client, http)
    dispute_id = (await control(http, f"charges/{charge_id}/dispute"))["dispute"]["id"]

    to_inquiry = await http.post(
        f"/_standin/disputes/{dispute_id}/update", json={"status": "warning_under_review"}
    )
    as_inquiry = await http.post(
        f"/_standin/disputes/{dispute_id}/close", json={"status": "warning_closed"}
    )
    await control(http, f"disputes/{dispute_id}/close", {"status": "lost"})
    after_close = await http.post(
        f"/_standin/disputes/{dispute_id}/update", json={"status": "under_review"}
    )
    twice = await http.post(f"/_standin/disputes/{dispute_id}/close", json={"status": "won"})
    unknown = await http.post("/_standin/disputes/dp_nope/close", json={"status": "won"})
    again = await http.post(f"/_standin/charges/{charge_id}/dispute")

    assert [r.status_code for r in (to_inquiry, as_inquiry, after_close, twice, unknown)] == [
        400,
        400,
        400,
        400,
        404,
    ]
    assert "cannot become an inquiry" in to_inquiry.json()["error"]["message"]
    assert "already closed (lost)" in twice.json()["error"]["message"]
    assert again.status_code == 400  # one dispute per charge
