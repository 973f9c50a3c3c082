"""The whole purchase flow over real HTTP: the API, the real Stripe SDK, the stand-in's events.

No event here is made by hand: every webhook is one the stand-in sent (or re-sent) itself,
signed as Stripe signs them, after a script pressed its hosted page's buttons.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import stripe
from litestar import Litestar

from api.services import Services
from ledger.adapters.stripe_webhooks import MARK_KEY, MARK_VALUE
from ledger.domain.ids import account_stream_id, checkout_stream_id
from stripe_standin import RunningStandin
from tests.e2e.conftest import Customer, served_api
from tests.support.events import caught_up, stream_events
from tests.support.stripe_events import WEBHOOK_SECRET

STRIPE_KEY = "sk_test_x"
AS_SCRIPT = {"Accept": "application/json"}  # not text/html: the stand-in answers JSON


class Purchase:
    """A Checkout started through ``POST /v1/credits/purchase``."""

    def __init__(self, customer: Customer, credits: int, body: dict[str, Any]) -> None:
        self.customer = customer
        self.credits = credits
        self.session_id: str = body["session_id"]
        self.checkout_url: str = body["checkout_url"]


async def purchase(http: httpx.AsyncClient, customer: Customer, credits: int) -> Purchase:
    response = await http.post(
        "/v1/credits/purchase", json={"credits": credits}, headers=customer.headers
    )
    assert response.status_code == 200, response.text
    return Purchase(customer, credits, response.json())


async def press(
    http: httpx.AsyncClient, bought: Purchase, button: str, **options: str
) -> httpx.Response:
    """POST ``<checkout_url>/pay|expire`` as a script would."""
    return await http.post(f"{bought.checkout_url}/{button}", params=options, headers=AS_SCRIPT)


async def pay(http: httpx.AsyncClient, bought: Purchase, **options: str) -> dict[str, Any]:
    """Pay and return ``{"session", "delivered"}`` (every event is delivered before it answers)."""
    response = await press(http, bought, "pay", **options)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["session"]["id"] == bought.session_id
    return answer


async def pay_at_another_price(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    ledger_app: Litestar,
    database_url: str,
    bought: Purchase,
    changes: dict[str, Any],
) -> dict[str, Any]:
    """Pay with Stripe's webhooks going to a replica of these settings ``changes`` (a price
    changed since the purchase); as ``pay``."""
    async with served_api(database_url, standin, changes=changes) as repriced:
        standin.configure_webhooks(f"{repriced.state.base_url}/v1/stripe/webhook", WEBHOOK_SECRET)
        try:
            return await pay(http, bought)
        finally:
            standin.configure_webhooks(
                f"{ledger_app.state.base_url}/v1/stripe/webhook", WEBHOOK_SECRET
            )


def event_types(standin: RunningStandin, event_ids: list[str]) -> list[str]:
    return [standin.state.webhooks.events[event_id].type for event_id in event_ids]


def assert_accepted(standin: RunningStandin, event_ids: list[str]) -> None:
    """Each event's deliveries so far were all answered 200 by the API."""
    for event_id in event_ids:
        statuses = [a.status for a in standin.state.webhooks.attempts if a.event_id == event_id]
        assert statuses, f"{event_id} was never delivered"
        assert set(statuses) == {200}, (event_id, statuses)


async def topup_balance(services: Services, account_id: str) -> int:
    return (await services.ledger.account(account_id)).topup_balance


async def account_event_types(services: Services, account_id: str) -> list[str]:
    return [t for t, _ in await stream_events(services.store, account_stream_id(account_id))]


async def session_event_types(services: Services, session_id: str) -> list[str]:
    return [t for t, _ in await stream_events(services.store, checkout_stream_id(session_id))]


async def paid(
    http: httpx.AsyncClient, standin: RunningStandin, customer: Customer, credits: int
) -> tuple[Purchase, str, int]:
    """A purchase paid on the hosted page: (purchase, its PaymentIntent id, amount paid)."""
    bought = await purchase(http, customer, credits)
    answer = await pay(http, bought)
    assert_accepted(standin, answer["delivered"])
    session = answer["session"]
    assert session["payment_status"] == "paid"
    return bought, str(session["payment_intent"]), int(session["amount_total"])


async def latest_charge(http: httpx.AsyncClient, standin: RunningStandin, intent: str) -> str:
    response = await http.get(
        f"{standin.base_url}/v1/payment_intents/{intent}",
        headers={"Authorization": f"Bearer {STRIPE_KEY}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["latest_charge"] in standin.state.charges
    return str(body["latest_charge"])


@pytest.fixture
async def stripe_client(standin: RunningStandin) -> AsyncIterator[stripe.StripeClient]:
    """The real SDK pointed at the stand-in, with an HTTPX client of this test's loop."""
    http_client = stripe.HTTPXClient()
    try:
        yield stripe.StripeClient(
            STRIPE_KEY, http_client=http_client, base_addresses={"api": standin.base_url}
        )
    finally:
        await http_client.close_async()


async def test_paying_credits_the_account_exactly_once(
    http: httpx.AsyncClient, standin: RunningStandin, customer: Customer, services: Services
) -> None:
    bought = await purchase(http, customer, 1200)

    answer = await pay(http, bought)

    assert event_types(standin, answer["delivered"]) == ["checkout.session.completed"]
    assert_accepted(standin, answer["delivered"])
    assert await topup_balance(services, customer.account_id) == 1200
    assert (await account_event_types(services, customer.account_id)).count("CreditsPurchased") == 1
    assert await session_event_types(services, bought.session_id) == [
        "CheckoutRequested",
        "CheckoutPaid",
    ]
    credits = (await http.get("/v1/credits", headers=customer.headers)).json()
    assert credits["topup_balance"] == 1200
    assert credits["allowance_remaining"] == 1000
    assert credits["balance"] == 2200


async def test_the_completed_event_resent_ten_times_at_once_credits_once(
    http: httpx.AsyncClient, standin: RunningStandin, customer: Customer, services: Services
) -> None:
    bought = await purchase(http, customer, 700)
    [completed] = (await pay(http, bought))["delivered"]
    assert event_types(standin, [completed]) == ["checkout.session.completed"]

    resent = await asyncio.gather(
        *(http.post(f"{standin.base_url}/_standin/events/{completed}/resend") for _ in range(10))
    )

    assert [r.status_code for r in resent] == [200] * 10
    assert [r.json() for r in resent] == [{"status": 200, "error": None}] * 10
    assert_accepted(standin, [completed])  # 11 deliveries, every one answered 200
    assert await topup_balance(services, customer.account_id) == 700
    assert (await account_event_types(services, customer.account_id)).count("CreditsPurchased") == 1
    assert await session_event_types(services, bought.session_id) == [
        "CheckoutRequested",
        "CheckoutPaid",
    ]


async def test_an_expired_session_credits_nothing_and_can_no_longer_be_paid(
    http: httpx.AsyncClient, standin: RunningStandin, customer: Customer, services: Services
) -> None:
    bought = await purchase(http, customer, 400)

    expired = await press(http, bought, "expire")

    assert expired.status_code == 200, expired.text
    assert expired.json()["session"]["status"] == "expired"
    assert event_types(standin, expired.json()["delivered"]) == ["checkout.session.expired"]
    assert_accepted(standin, expired.json()["delivered"])
    assert await topup_balance(services, customer.account_id) == 0

    events_before = len(standin.state.webhooks.events)
    refused = await press(http, bought, "pay")

    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "This Checkout Session is expired, not open."
    assert len(standin.state.webhooks.events) == events_before  # nothing was sent
    assert await topup_balance(services, customer.account_id) == 0
    assert await session_event_types(services, bought.session_id) == [
        "CheckoutRequested",
        "CheckoutExpired",
    ]


async def test_a_delayed_payment_that_succeeds_credits_once(
    http: httpx.AsyncClient, standin: RunningStandin, customer: Customer, services: Services
) -> None:
    bought = await purchase(http, customer, 500)

    answer = await pay(http, bought, mode="async")

    assert event_types(standin, answer["delivered"]) == [
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
    ]
    assert_accepted(standin, answer["delivered"])
    assert await topup_balance(services, customer.account_id) == 500
    assert (await account_event_types(services, customer.account_id)).count("CreditsPurchased") == 1
    assert await session_event_types(services, bought.session_id) == [
        "CheckoutRequested",
        "CheckoutPaid",
    ]


async def test_a_delayed_payment_that_fails_credits_nothing(
    http: httpx.AsyncClient, standin: RunningStandin, customer: Customer, services: Services
) -> None:
    bought = await purchase(http, customer, 500)

    answer = await pay(http, bought, mode="async", outcome="fail")

    assert event_types(standin, answer["delivered"]) == [
        "checkout.session.completed",
        "checkout.session.async_payment_failed",
    ]
    assert_accepted(standin, answer["delivered"])
    assert await topup_balance(services, customer.account_id) == 0
    assert "CreditsPurchased" not in await account_event_types(services, customer.account_id)
    assert await session_event_types(services, bought.session_id) == [
        "CheckoutRequested",
        "CheckoutFailed",
    ]


async def test_refunds_made_with_the_sdk_claw_back_the_refunded_share(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    customer: Customer,
    services: Services,
    stripe_client: stripe.StripeClient,
) -> None:
    credits = 1500
    _, intent, amount = await paid(http, standin, customer, credits)
    events_before = len(standin.state.webhooks.events)

    first = await stripe_client.v1.refunds.create_async(
        params={"payment_intent": intent, "amount": 300}
    )

    assert (first.status, first.amount, first.payment_intent) == ("succeeded", 300, intent)
    refunded_events = list(standin.state.webhooks.events)[events_before:]
    assert event_types(standin, refunded_events) == ["charge.refunded", "refund.created"]
    assert_accepted(standin, refunded_events)
    assert await topup_balance(services, customer.account_id) == credits - credits * 300 // amount

    second = await stripe_client.v1.refunds.create_async(
        params={"payment_intent": intent, "amount": 500}
    )

    assert (second.status, second.amount) == ("succeeded", 500)
    assert await topup_balance(services, customer.account_id) == credits - credits * 800 // amount
    assert (await account_event_types(services, customer.account_id)).count(
        "CreditsClawedBack"
    ) == 2
    credits_now = (await http.get("/v1/credits", headers=customer.headers)).json()
    assert credits_now["balance"] == 1000 + credits - credits * 800 // amount


async def test_a_dispute_reverses_what_is_left_and_winning_it_restores_that(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    customer: Customer,
    services: Services,
    stripe_client: stripe.StripeClient,
) -> None:
    credits = 1000
    _, intent, amount = await paid(http, standin, customer, credits)
    await stripe_client.v1.refunds.create_async(params={"payment_intent": intent, "amount": 250})
    left = credits - credits * 250 // amount
    assert await topup_balance(services, customer.account_id) == left
    charge = await latest_charge(http, standin, intent)

    opened = await http.post(f"{standin.base_url}/_standin/charges/{charge}/dispute")

    assert opened.status_code == 200, opened.text
    dispute = opened.json()["dispute"]
    assert dispute["amount"] == amount - 250
    # A chargeback: Stripe withdraws the funds at once and says so in a second event.
    assert event_types(standin, opened.json()["delivered"]) == [
        "charge.dispute.created",
        "charge.dispute.funds_withdrawn",
    ]
    assert_accepted(standin, opened.json()["delivered"])
    assert await topup_balance(services, customer.account_id) == 0

    closed = await http.post(
        f"{standin.base_url}/_standin/disputes/{dispute['id']}/close", json={"status": "won"}
    )

    assert closed.status_code == 200, closed.text
    assert event_types(standin, closed.json()["delivered"]) == [
        "charge.dispute.closed",
        "charge.dispute.funds_reinstated",
    ]
    assert_accepted(standin, closed.json()["delivered"])
    assert await topup_balance(services, customer.account_id) == left
    types = await account_event_types(services, customer.account_id)
    assert (types.count("CreditsReversed"), types.count("CreditsRestored")) == (1, 1)


async def test_a_lost_dispute_keeps_the_credits_reversed(
    http: httpx.AsyncClient, standin: RunningStandin, customer: Customer, services: Services
) -> None:
    _, intent, amount = await paid(http, standin, customer, 600)
    charge = await latest_charge(http, standin, intent)

    opened = await http.post(
        f"{standin.base_url}/_standin/charges/{charge}/dispute", json={"reason": "fraudulent"}
    )
    assert opened.status_code == 200, opened.text
    dispute = opened.json()["dispute"]
    assert dispute["amount"] == amount
    assert_accepted(standin, opened.json()["delivered"])
    assert await topup_balance(services, customer.account_id) == 0

    closed = await http.post(
        f"{standin.base_url}/_standin/disputes/{dispute['id']}/close", json={"status": "lost"}
    )

    assert closed.status_code == 200, closed.text
    assert_accepted(standin, closed.json()["delivered"])
    assert await topup_balance(services, customer.account_id) == 0
    types = await account_event_types(services, customer.account_id)
    assert (types.count("CreditsReversed"), types.count("CreditsRestored")) == (1, 0)
    credits_now = (await http.get("/v1/credits", headers=customer.headers)).json()
    assert (credits_now["topup_balance"], credits_now["balance"]) == (0, 1000)
    # The purchase says what the chargeback took (it showed "paid" and nothing taken back).
    await caught_up(services.store)
    listed = (await http.get("/v1/credits/purchases", headers=customer.headers)).json()
    [purchase] = listed["data"]
    assert (purchase["status"], purchase["credits_clawed_back"]) == ("paid", 0)
    assert purchase["credits_reversed"] == 600


async def test_a_paid_session_never_recorded_made_before_a_price_rise_is_kept_for_review(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    customer: Customer,
    services: Services,
    ledger_app: Litestar,
    database_url: str,
) -> None:
    """Stripe made the session, its answer was lost (502, nothing recorded), and it was paid
    after CREDIT_UNIT_AMOUNT rose from 1 to 3. Its metadata's price is anyone's to write, so
    a price below the service's is not taken: 600 paid is 200 credits now, and the payment is
    recorded as a mismatch for someone to look at, crediting nothing."""
    made_before = set(standin.state.sessions)
    await http.post(f"{standin.base_url}/_standin/fail-next", json={"mode": "drop", "count": 3})
    try:
        lost = await http.post(
            "/v1/credits/purchase", json={"credits": 600}, headers=customer.headers
        )
    finally:
        await http.post(f"{standin.base_url}/_standin/fail-next", json={"count": 0})
    assert lost.status_code == 502, lost.text
    [session_id] = set(standin.state.sessions) - made_before
    made = standin.state.sessions[session_id].data
    assert made["metadata"][MARK_KEY] == MARK_VALUE  # as the gateway sent it

    never_recorded = Purchase(
        customer, 600, {"session_id": session_id, "checkout_url": made["url"]}
    )

    answer = await pay_at_another_price(
        http, standin, ledger_app, database_url, never_recorded, {"credit_unit_amount": 3}
    )

    assert_accepted(standin, answer["delivered"])
    assert answer["session"]["amount_total"] == 600
    account = await services.ledger.account(customer.account_id, fresh=True)
    assert account.topup_balance == 0
    assert await session_event_types(services, session_id) == [
        "CheckoutRequested",
        "PaymentMismatched",
    ]


async def test_a_purchase_paid_after_the_price_changed_is_credited_as_recorded(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    customer: Customer,
    services: Services,
    ledger_app: Litestar,
    database_url: str,
) -> None:
    """The credits and the amount checked are those recorded at purchase, not the price
    and currency of the replica the webhook reaches."""
    bought = await purchase(http, customer, 900)
    changes = {"credit_unit_amount": 5, "credit_currency": "eur"}

    answer = await pay_at_another_price(http, standin, ledger_app, database_url, bought, changes)

    assert_accepted(standin, answer["delivered"])
    assert (answer["session"]["amount_total"], answer["session"]["currency"]) == (900, "usd")
    account = await services.ledger.account(customer.account_id, fresh=True)
    assert account.topup_balance == 900
    assert await session_event_types(services, bought.session_id) == [
        "CheckoutRequested",
        "CheckoutPaid",
    ]


async def made_elsewhere(
    client: stripe.StripeClient,
    customer: Customer,
    credits: int,
    price: tuple[int, str],
    metadata_price: dict[str, str],
) -> Purchase:
    """A session made on the Stripe account by someone else than the ledger (another
    integration, a teammate's test), carrying the ledger's mark and naming ``customer``'s
    account, priced ``price`` (unit amount, currency) a credit: never recorded."""
    unit_amount, currency = price
    session = await client.v1.checkout.sessions.create_async(
        params={
            "mode": "payment",
            "line_items": [
                {
                    "quantity": credits,
                    "price_data": {
                        "currency": currency,
                        "unit_amount": unit_amount,
                        "product_data": {"name": "Credits"},
                    },
                }
            ],
            "metadata": {
                MARK_KEY: MARK_VALUE,
                "account_id": customer.account_id,
                "credits": str(credits),
                **metadata_price,
            },
            "success_url": "https://elsewhere.example/done",
        }
    )
    assert session.url is not None
    return Purchase(customer, credits, {"session_id": session.id, "checkout_url": session.url})


@pytest.mark.parametrize(
    ("price", "metadata_price", "service_price"),
    [
        # The metadata names the price it was paid at, below the service's.
        ((1, "usd"), {"unit_amount": "1", "currency": "usd"}, 3),
        # Paid in yen, 600 of them for 600 credits of a cent each.
        ((1, "jpy"), {"unit_amount": "1", "currency": "jpy"}, 1),
        # A price of 0 is no price: the service's is taken, and it was not paid.
        ((1, "usd"), {"unit_amount": "0", "currency": "usd"}, 3),
    ],
    ids=["below-the-price", "another-currency", "price-0"],
)
async def test_a_session_made_elsewhere_paid_below_the_price_credits_nothing(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    customer: Customer,
    services: Services,
    ledger_app: Litestar,
    database_url: str,
    stripe_client: stripe.StripeClient,
    price: tuple[int, str],
    metadata_price: dict[str, str],
    service_price: int,
) -> None:
    """Whoever can make sessions on the Stripe account can write the ledger's mark and any
    price in their metadata: a session never recorded credits only what it paid for at the
    service's price (CREDIT_UNIT_AMOUNT, CREDIT_CURRENCY). Paid below it, the payment is
    recorded as a mismatch (the purchase needs review) and its refund takes nothing back."""
    made = await made_elsewhere(stripe_client, customer, 600, price, metadata_price)

    answer = await pay_at_another_price(
        http, standin, ledger_app, database_url, made, {"credit_unit_amount": service_price}
    )

    assert_accepted(standin, answer["delivered"])
    assert (answer["session"]["amount_total"], answer["session"]["currency"]) == (600, price[1])
    assert await topup_balance(services, customer.account_id) == 0
    assert await session_event_types(services, made.session_id) == [
        "CheckoutRequested",
        "PaymentMismatched",
    ]
    await caught_up(services.store)
    listed = (await http.get("/v1/credits/purchases", headers=customer.headers)).json()
    [purchase] = listed["data"]
    assert (purchase["status"], purchase["needs_review"]) == ("pending", True)

    refund = await stripe_client.v1.refunds.create_async(
        params={"payment_intent": answer["session"]["payment_intent"]}
    )

    assert refund.status == "succeeded"
    account = await services.ledger.account(customer.account_id, fresh=True)
    assert (account.topup_balance, account.balance) == (0, 1000)
    assert "CreditsClawedBack" not in await account_event_types(services, customer.account_id)


@pytest.mark.parametrize(
    ("price", "metadata_price"),
    [
        # Made when a credit cost 3, paid after it fell to the service's 1: 3 a credit paid.
        ((3, "usd"), {"unit_amount": "3", "currency": "usd"}),
        # Made at the service's price, whatever the metadata says of it.
        ((1, "usd"), {"unit_amount": "0"}),
        ((1, "usd"), {}),
    ],
    ids=["above-the-price", "price-0", "no-price"],
)
async def test_a_session_made_elsewhere_paid_at_the_price_credits_what_was_paid_for(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    customer: Customer,
    services: Services,
    stripe_client: stripe.StripeClient,
    price: tuple[int, str],
    metadata_price: dict[str, str],
) -> None:
    """A marked session never recorded, paid at least the service's price a credit in its
    currency, credits its metadata's credits; a refund of half its money takes back half."""
    made = await made_elsewhere(stripe_client, customer, 600, price, metadata_price)

    answer = await pay(http, made)

    assert_accepted(standin, answer["delivered"])
    paid_total = answer["session"]["amount_total"]
    assert paid_total == 600 * price[0]
    assert await topup_balance(services, customer.account_id) == 600
    assert await session_event_types(services, made.session_id) == [
        "CheckoutRequested",
        "CheckoutPaid",
    ]

    await stripe_client.v1.refunds.create_async(
        params={"payment_intent": answer["session"]["payment_intent"], "amount": paid_total // 2}
    )

    assert await topup_balance(services, customer.account_id) == 300
