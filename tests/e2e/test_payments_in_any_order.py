"""Refunds and disputes that Stripe delivers before the payment they belong to.

The stand-in holds back ``checkout.session.completed`` (as a first delivery that
failed and is retried hours later would be) while a refund or a dispute of the
same payment is delivered; then it releases the payment. The account must end
as if everything had come in order, and redeliveries must change nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import stripe

from api.services import Services
from ledger.domain.ids import payment_intent_stream_id
from stripe_standin import RunningStandin
from stripe_standin.events import Event
from tests.e2e.conftest import Customer
from tests.e2e.test_checkout_flow import (
    account_event_types,
    assert_accepted,
    latest_charge,
    pay,
    purchase,
    stripe_client,
    topup_balance,
)
from tests.support.events import stream_events

__all__ = ["stripe_client"]  # the fixture, used here


@pytest.fixture
def payments_held(standin: RunningStandin) -> AsyncIterator[None]:
    """Completed events are recorded by the stand-in but not delivered until released."""
    standin.hold_webhooks(["checkout.session.completed"])
    yield
    standin.hold_webhooks([])


async def paid_but_not_delivered(
    http: httpx.AsyncClient, standin: RunningStandin, customer: Customer, credits: int
) -> tuple[str, str]:
    """Pay on the hosted page while the completed event is held: (its event id, the intent)."""
    bought = await purchase(http, customer, credits)
    answer = await pay(http, bought)
    [held] = [e for e in standin.held_events if about(e) == bought.session_id]
    return held.id, str(answer["session"]["payment_intent"])


def about(event: Event) -> str:
    """The id of the object an event is about."""
    return str(event.as_dict()["data"]["object"]["id"])


async def resend(http: httpx.AsyncClient, standin: RunningStandin, event_id: str) -> None:
    resent = await http.post(f"{standin.base_url}/_standin/events/{event_id}/resend")
    assert resent.status_code == 200, resent.text


@pytest.mark.usefixtures("payments_held")
async def test_a_refund_before_its_payment_is_applied_when_the_payment_lands(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    customer: Customer,
    services: Services,
    stripe_client: stripe.StripeClient,
) -> None:
    completed, intent = await paid_but_not_delivered(http, standin, customer, 1000)
    refund = await stripe_client.v1.refunds.create_async(
        params={"payment_intent": intent, "amount": 400}
    )
    assert refund.status == "succeeded"

    # Nothing to take back yet, and nothing lost: it waits on the payment intent's stream.
    assert await topup_balance(services, customer.account_id) == 0
    kept = await stream_events(services.store, payment_intent_stream_id(intent))
    assert [kind for kind, _ in kept] == [
        "PaymentIntentRecorded",
        "RefundRecordedBeforePayment",  # charge.refunded
        "RefundUpdateRecordedBeforePayment",  # refund.created
    ]

    [attempt] = await standin.release_webhooks([completed])
    assert attempt.status == 200

    assert await topup_balance(services, customer.account_id) == 600
    types = await account_event_types(services, customer.account_id)
    assert (types.count("CreditsPurchased"), types.count("CreditsClawedBack")) == (1, 1)

    refunded = [
        e.id
        for e in standin.state.webhooks.events.values()
        if e.type in ("charge.refunded", "refund.created")
        and e.as_dict()["data"]["object"]["payment_intent"] == intent
    ]
    for event_id in [completed, *refunded]:
        await resend(http, standin, event_id)
    assert await topup_balance(services, customer.account_id) == 600
    assert await account_event_types(services, customer.account_id) == types


@pytest.mark.usefixtures("payments_held")
async def test_a_chargeback_before_its_payment_leaves_the_purchase_reversed(
    http: httpx.AsyncClient, standin: RunningStandin, customer: Customer, services: Services
) -> None:
    completed, intent = await paid_but_not_delivered(http, standin, customer, 800)
    charge = await latest_charge(http, standin, intent)
    opened = await http.post(f"{standin.base_url}/_standin/charges/{charge}/dispute")
    assert opened.status_code == 200, opened.text
    assert_accepted(standin, opened.json()["delivered"])
    assert await topup_balance(services, customer.account_id) == 0

    await standin.release_webhooks([completed])

    assert await topup_balance(services, customer.account_id) == 0
    types = await account_event_types(services, customer.account_id)
    assert (types.count("CreditsPurchased"), types.count("CreditsReversed")) == (1, 1)

    for event_id in [completed, *opened.json()["delivered"]]:
        await resend(http, standin, event_id)
    assert await topup_balance(services, customer.account_id) == 0

    won = await http.post(
        f"{standin.base_url}/_standin/disputes/{opened.json()['dispute']['id']}/close",
        json={"status": "won"},
    )
    assert won.status_code == 200, won.text
    assert await topup_balance(services, customer.account_id) == 800


@pytest.mark.usefixtures("payments_held")
async def test_an_inquiry_takes_nothing_back_before_or_after_its_payment(
    http: httpx.AsyncClient, standin: RunningStandin, customer: Customer, services: Services
) -> None:
    completed, intent = await paid_but_not_delivered(http, standin, customer, 500)
    charge = await latest_charge(http, standin, intent)
    inquiry = await http.post(
        f"{standin.base_url}/_standin/charges/{charge}/dispute",
        json={"status": "warning_needs_response"},
    )
    assert inquiry.status_code == 200, inquiry.text

    await standin.release_webhooks([completed])
    assert await topup_balance(services, customer.account_id) == 500

    closed = await http.post(
        f"{standin.base_url}/_standin/disputes/{inquiry.json()['dispute']['id']}/close",
        json={"status": "warning_closed"},
    )
    assert closed.status_code == 200, closed.text
    assert await topup_balance(services, customer.account_id) == 500
    types = await account_event_types(services, customer.account_id)
    assert "CreditsReversed" not in types
    assert "CreditsRestored" not in types
