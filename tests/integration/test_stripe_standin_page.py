"""The hosted checkout page: a card form that takes Stripe's test cards, and a delayed method.

Most tests post the page's form as a browser would (``Accept: text/html``, form-encoded);
two drive Debian's Chromium through the page itself.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import stripe

from stripe_standin import RunningStandin, run_standin
from tests.support.browser import chromium, fill_checkout
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

if TYPE_CHECKING:
    from playwright.async_api import Browser

AS_BROWSER = {"Accept": "text/html,application/xhtml+xml"}
CARD = {
    "email": "ada@example.com",
    "method": "card",
    "bank_outcome": "success",
    "card_number": "4242 4242 4242 4242",
    "card_expiry": "12 / 34",
    "card_cvc": "123",
    "card_name": "Ada Lovelace",
}


class Elements(HTMLParser):
    """Every element with an id: its tag and attributes (the page, read as a browser reads it)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.by_id: dict[str, tuple[str, dict[str, str | None]]] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if attributes.get("id"):
            self.by_id[str(attributes["id"])] = (tag, attributes)


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


async def new_session(client: stripe.StripeClient, credits: int = 1250, **extra: Any) -> Any:
    return await client.v1.checkout.sessions.create_async(params=top_up(credits, **extra))


def events_for(standin: RunningStandin, session_id: str) -> list[str]:
    return [e.type for e in standin.state.webhooks.events.values() if session_id in str(e.body)]


def card_error(page: str) -> str:
    found = re.search(r'<div id="card-error"[^>]*>(.*?)</div>', page, re.S)
    assert found is not None
    return found.group(1)


async def test_the_page_shows_the_product_the_amount_and_a_card_form(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    session = await new_session(client, 1250)

    page = await http.get(str(session.url))

    assert page.status_code == 200
    elements = Elements(page.text)
    main = next(attrs for tag, attrs in elements.tags if tag == "main")
    assert (main["data-session-id"], main["data-status"]) == (session.id, "open")
    assert elements.by_id["credits"][1]["data-credits"] == "1250"
    assert '<p class="line-title" id="credits" data-credits="1250">1250 credits</p>' in page.text
    amount = elements.by_id["amount"][1]
    assert (amount["data-amount"], amount["data-currency"]) == ("1250", "usd")
    assert '<span id="amount" data-amount="1250" data-currency="usd">$12.50</span>' in page.text
    for field_id in ("email", "card-number", "card-expiry", "card-cvc", "card-name"):
        assert elements.by_id[field_id][0] == "input"
    assert elements.by_id["method-bank"][1]["value"] == "bank_transfer"
    assert elements.by_id["cancel-link"][1]["href"] == CANCEL_URL
    for button in ("Pay", "Cancel", "Expire"):
        assert f">{button}</button>" in page.text
    # Self-contained: no stylesheet, script or image is fetched from anywhere.
    assert not [
        (tag, attrs)
        for tag, attrs in elements.tags
        if tag in ("link", "img", "iframe") or (tag == "script" and attrs.get("src"))
    ]


async def test_the_test_visa_pays_and_the_browser_goes_to_the_success_url(
    client: stripe.StripeClient, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    session = await new_session(client)

    response = await http.post(f"/c/pay/{session.id}/pay", data=CARD, headers=AS_BROWSER)

    assert response.status_code == 303
    assert response.headers["location"] == SUCCESS_URL.replace("{CHECKOUT_SESSION_ID}", session.id)
    fetched = await client.v1.checkout.sessions.retrieve_async(session.id)
    assert (fetched.status, fetched.payment_status) == ("complete", "paid")
    assert fetched.customer_details is not None
    assert (fetched.customer_details.email, fetched.customer_details.name) == (
        "ada@example.com",
        "Ada Lovelace",
    )
    intent = await client.v1.payment_intents.retrieve_async(str(fetched.payment_intent))
    charge = await client.v1.charges.retrieve_async(str(intent.latest_charge))
    card = charge.to_dict()["payment_method_details"]["card"]
    assert (card["brand"], card["last4"], card["exp_month"], card["exp_year"]) == (
        "visa",
        "4242",
        12,
        2034,
    )
    [completed] = receiver.about(session.id, "checkout.session.completed")
    assert verify(completed).data.object.customer_details.email == "ada@example.com"


async def test_a_declined_card_shows_stripes_message_and_pays_nothing(
    client: stripe.StripeClient, http: httpx.AsyncClient, standin: RunningStandin
) -> None:
    session = await new_session(client)
    declined = {**CARD, "card_number": "4000 0000 0000 0002"}

    response = await http.post(f"/c/pay/{session.id}/pay", data=declined, headers=AS_BROWSER)

    assert response.status_code == 402
    assert card_error(response.text) == "Your card was declined."
    elements = Elements(response.text)
    assert elements.by_id["card-number"][1]["value"] == "4000 0000 0000 0002"  # kept
    assert elements.by_id["email"][1]["value"] == "ada@example.com"
    assert elements.by_id["card-cvc"][1]["value"] == ""  # never shown again
    fetched = await client.v1.checkout.sessions.retrieve_async(session.id)
    assert (fetched.status, fetched.payment_status, fetched.payment_intent) == (
        "open",
        "unpaid",
        None,
    )
    assert events_for(standin, session.id) == []

    retried = await http.post(f"/c/pay/{session.id}/pay", data=CARD, headers=AS_BROWSER)
    assert retried.status_code == 303


@pytest.mark.parametrize(
    ("changes", "status", "message", "invalid"),
    [
        ({"card_number": "4000 0000 0000 9995"}, 402, "Your card has insufficient funds.", None),
        ({"card_number": "4000 0000 0000 0069"}, 402, "Your card has expired.", None),
        ({"card_number": "4111 1111 1111 1111"}, 402, "used a non test card", None),
        ({"card_number": "4242 4242 4242"}, 402, "Your card number is incomplete.", "card-number"),
        (
            {"card_number": "4242 4242 4242 4241"},
            402,
            "Your card number is invalid.",
            "card-number",
        ),
        ({"card_expiry": "01 / 20"}, 402, "expiration date is in the past.", "card-expiry"),
        ({"card_expiry": "13 / 40"}, 402, "expiration month is invalid.", "card-expiry"),
        ({"card_cvc": "12"}, 402, "security code is incomplete.", "card-cvc"),
        ({"card_name": " "}, 400, "Enter the name on your card.", "card-name"),
        ({"email": ""}, 400, "Your email is incomplete.", "email"),
        ({"email": "ada@"}, 400, "Your email address is invalid.", "email"),
    ],
)
async def test_card_and_email_problems_are_shown_on_the_page(
    client: stripe.StripeClient,
    http: httpx.AsyncClient,
    standin: RunningStandin,
    changes: dict[str, str],
    status: int,
    message: str,
    invalid: str | None,
) -> None:
    session = await new_session(client)

    response = await http.post(
        f"/c/pay/{session.id}/pay", data={**CARD, **changes}, headers=AS_BROWSER
    )

    assert response.status_code == status
    assert message in card_error(response.text)
    if invalid is not None:
        assert Elements(response.text).by_id[invalid][1]["aria-invalid"] == "true"
    assert events_for(standin, session.id) == []


async def test_a_script_sees_a_decline_as_a_stripe_card_error(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    session = await new_session(client)

    response = await http.post(f"/c/pay/{session.id}/pay", json={"card_number": "4000000000000002"})

    assert response.status_code == 402
    assert response.json() == {
        "error": {
            "code": "card_declined",
            "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "decline_code": "generic_decline",
            "message": "Your card was declined.",
            "type": "card_error",
        }
    }
    fetched = await client.v1.checkout.sessions.retrieve_async(session.id)
    assert fetched.status == "open"


@pytest.mark.parametrize(
    ("outcome", "then"),
    [
        ("success", ("checkout.session.async_payment_succeeded", "paid")),
        ("fail", ("checkout.session.async_payment_failed", "unpaid")),
    ],
)
async def test_a_bank_transfer_completes_unpaid_then_settles(
    client: stripe.StripeClient,
    http: httpx.AsyncClient,
    receiver: Receiver,
    outcome: str,
    then: tuple[str, str],
) -> None:
    session = await new_session(client)
    form = {"email": "ada@example.com", "method": "bank_transfer", "bank_outcome": outcome}
    form |= {"card_number": "", "card_expiry": "", "card_name": ""}  # the card fields, empty

    response = await http.post(f"/c/pay/{session.id}/pay", data=form, headers=AS_BROWSER)

    assert response.status_code == 303
    events = [verify(item) for item in receiver.about(session.id)]
    assert [(e.type, e.data.object.payment_status) for e in events] == [
        ("checkout.session.completed", "unpaid"),
        then,
    ]


async def test_closed_sessions_show_why_and_offer_nothing_to_press(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    session = await new_session(client)
    await http.post(f"/c/pay/{session.id}/expire")

    page = await http.get(str(session.url))

    elements = Elements(page.text)
    assert elements.by_id["status"][1]["data-status"] == "expired"
    assert "This Checkout Session has expired." in page.text
    assert "disabled" in elements.by_id["all-fields"][1]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


def shop_urls(receiver: Receiver) -> dict[str, str]:
    """Success and cancel URLs a browser can load (the receiver serves them)."""
    return {
        "success_url": f"{receiver.base_url}/shop/success?session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{receiver.base_url}/shop/cancel",
    }


async def test_in_a_browser_a_declined_card_then_the_test_visa(
    browser: Browser, client: stripe.StripeClient, standin: RunningStandin, receiver: Receiver
) -> None:
    from playwright.async_api import expect

    session = await new_session(client, 1250, **shop_urls(receiver))
    page = await browser.new_page()
    try:
        page.set_default_timeout(15_000)
        await page.goto(str(session.url))

        await fill_checkout(page, "4000000000000002")
        await expect(page.locator("#card-number")).to_have_value("4000 0000 0000 0002")
        await page.click("#pay")

        await expect(page.locator("#card-error")).to_have_text("Your card was declined.")
        assert events_for(standin, session.id) == []
        fetched = await client.v1.checkout.sessions.retrieve_async(session.id)
        assert fetched.status == "open"

        await page.fill("#card-number", "4242424242424242")
        await page.fill("#card-cvc", "123")
        async with page.expect_navigation(url=f"**/shop/success?session_id={session.id}"):
            await page.click("#pay")
        await expect(page.locator("#shop")).to_have_text("success")
    finally:
        await page.close()

    assert events_for(standin, session.id) == ["checkout.session.completed"]


async def test_in_a_browser_a_delayed_bank_transfer_and_the_back_link(
    browser: Browser, client: stripe.StripeClient, receiver: Receiver
) -> None:
    from playwright.async_api import expect

    session = await new_session(client, **shop_urls(receiver))
    page = await browser.new_page()
    try:
        page.set_default_timeout(15_000)
        await page.goto(str(session.url))
        await page.click("#cancel-link")
        await expect(page.locator("#shop")).to_have_text("cancel")
        await page.go_back()

        await page.fill("#email", "grace@example.com")
        await page.check("#method-bank")
        await expect(page.locator("#card-number")).to_be_hidden()
        await page.check("#bank-fails")
        async with page.expect_navigation(url=f"**/shop/success?session_id={session.id}"):
            await page.click("#pay")
    finally:
        await page.close()

    events = [verify(item) for item in receiver.about(session.id)]
    assert [(e.type, e.data.object.payment_status) for e in events] == [
        ("checkout.session.completed", "unpaid"),
        ("checkout.session.async_payment_failed", "unpaid"),
    ]
    assert events[0].data.object.customer_details.email == "grace@example.com"
