"""The customer's page (/account) in a real browser: sign in, read the balance, buy, pay, return.

Headless Chromium from Debian driven by Playwright (tests/support/browser.py), in a phone-sized
window. The e2e app runs no projector of its own: the test catches the views up where a running
``ledger project`` would, and the page's own polling after Checkout picks the result up.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from api.services import Services
from stripe_standin import RunningStandin
from tests.e2e.conftest import Customer
from tests.support.browser import chromium, fill_checkout
from tests.support.events import caught_up
from tests.support.stripe_events import checkout_session, event_body, signature

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, Request

TIMEOUT_MS = 15_000
PHONE = {"width": 390, "height": 844}
TOKEN_KEY = "ledger.credits-token"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    opened = await browser.new_context(
        viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True, locale="en-US"
    )
    try:
        yield opened
    finally:
        await opened.close()


class Watched:
    """A page, with what the browser reported about /account: console errors (a CSP
    violation is one), uncaught exceptions, and the purchases the page posted."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.problems: list[str] = []
        self.purchases: list[Request] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"exception: {error}"))
        page.on("request", self._request)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and message.location.get("url", "").startswith(
            f"{self.base_url}/account"
        ):
            self.problems.append(message.text)

    def _request(self, request: Request) -> None:
        if request.method == "POST" and request.url == f"{self.base_url}/v1/credits/purchase":
            self.purchases.append(request)


async def watched(context: BrowserContext, base_url: str) -> Watched:
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return Watched(page, base_url)


async def stored(page: Page) -> dict[str, Any]:
    """Everything this origin keeps in the browser: both storages and its cookies."""
    storages = await page.evaluate(
        "() => ({session: {...sessionStorage}, local: {...localStorage}})"
    )
    cookies = await page.context.cookies()
    return {**storages, "cookies": cookies}


async def fits_the_screen(page: Page) -> bool:
    return bool(
        await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    )


async def sign_in(page: Page, base_url: str, token: str) -> None:
    await page.goto(f"{base_url}/account")
    await page.get_by_label("Your credits token").fill(token)
    await page.get_by_role("button", name="Sign in").click()


async def test_a_customer_signs_in_buys_500_credits_pays_and_sees_them_on_the_account_page(
    context: BrowserContext,
    http: httpx.AsyncClient,
    standin: RunningStandin,
    customer: Customer,
    services: Services,
    writer_headers: dict[str, str],
) -> None:
    from playwright.async_api import expect

    base_url = f"{http.base_url}".rstrip("/")
    account = f"/v1/accounts/{customer.account_id}"
    for path, body in [
        ("/spend", {"amount": 300, "reason": "images"}),
        ("/grants", {"amount": 200, "reason": "welcome offer"}),
        ("/holds", {"amount": 50, "reason": "a job in progress"}),
    ]:
        headers = {**writer_headers, "Idempotency-Key": uuid.uuid4().hex}
        answer = await http.post(account + path, json=body, headers=headers)
        assert answer.status_code in (200, 201), answer.text
    await caught_up(services.store)  # what `ledger project` does beside a running service
    watch = await watched(context, base_url)
    page = watch.page

    await sign_in(page, base_url, customer.token)

    # 1,000 allowance - 300 spent = 700; a grant of 200; no top-ups; 50 of it held.
    figures = {
        "balance": 900,
        "available": 850,
        "allowance-remaining": 700,
        "monthly-allowance": 1000,
        "granted": 200,
        "topup": 0,
        "held": 50,
    }
    for name, value in figures.items():
        await expect(page.locator(f"#{name}")).to_have_attribute("data-value", str(value))
    await expect(page.locator("#balance")).to_have_text("900")
    await expect(page.locator("#monthly-allowance")).to_have_text("1,000")
    bar = page.locator("#balance-bar svg")
    await expect(bar).to_have_attribute("role", "img")
    assert await bar.locator("[data-part]").evaluate_all(
        "rects => rects.map(r => [r.dataset.part, Math.round(+r.getAttribute('width'))])"
    ) == [["allowance", round(700 / 900 * 1000)], ["granted", round(200 / 900 * 1000)],
          ["held", round(50 / 900 * 1000)]]  # fmt: skip
    kept = await stored(page)
    assert kept["session"] == {TOKEN_KEY: customer.token}  # and nowhere else:
    assert kept["local"] == {}
    assert kept["cookies"] == []
    assert page.url == f"{base_url}/account"
    await expect(page.locator("#purchases-empty")).to_be_visible()
    assert await fits_the_screen(page)

    # The contract's 422, next to the field, announced; nothing leaves for Checkout.
    credits = page.get_by_label("Credits to buy")
    await credits.fill("50")
    await page.get_by_role("button", name="Buy credits").click()
    await expect(page.locator("#credits-error")).to_have_text("The credits must be at least 100.")
    await expect(credits).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#credits-error")).to_have_attribute("aria-live", "assertive")
    assert page.url == f"{base_url}/account"

    await credits.fill("500")
    async with page.expect_navigation(url=re.compile(r"/c/pay/cs_")):
        await page.get_by_role("button", name="Buy credits").click()
    session_id = page.url.rsplit("/", 1)[-1]
    await expect(page.locator("#credits")).to_have_attribute("data-credits", "500")

    first, second = watch.purchases
    assert json.loads(first.post_data or "") == {"credits": 50}
    assert json.loads(second.post_data or "") == {"credits": 500}
    for request in (first, second):
        assert request.headers["authorization"] == f"Bearer {customer.token}"
        assert request.headers["content-type"] == "application/json"
        assert UUID.match(request.headers["idempotency-key"])
    assert first.headers["idempotency-key"] != second.headers["idempotency-key"]

    await fill_checkout(page, "4242 4242 4242 4242")
    async with page.expect_navigation(url=re.compile(re.escape(f"{base_url}/checkout/success"))):
        await page.click("#pay")
    await expect(page.locator("#status")).to_have_attribute("data-status", "credited")
    await caught_up(services.store)

    async with page.expect_navigation(url=f"{base_url}/account"):
        await page.get_by_role("link", name="Back to your account").click()

    await expect(page.locator("#balance")).to_have_attribute("data-value", "1400")
    await expect(page.locator("#balance")).to_have_text("1,400")
    await expect(page.locator("#topup")).to_have_attribute("data-value", "500")
    await expect(page.locator("#available")).to_have_attribute("data-value", "1350")
    await expect(page.locator("#page-status")).to_have_text("500 credits were added.")
    row = page.locator(f'#purchases tr[data-session-id="{session_id}"]')
    await expect(row).to_have_attribute("data-status", "paid")
    await expect(row.locator("td").nth(1)).to_have_text("500")
    await expect(row.locator("td").nth(2)).to_have_text("$5.00")
    line = page.locator("#chart-plot svg path.line")
    await expect(line).to_have_attribute("d", re.compile(r"^M[\d.]+ [\d.]+( [HV][\d.]+)+$"))
    # opened, spent, granted, held, topped up, and now
    await expect(line).to_have_attribute("data-points", "6")
    await expect(page.locator("#chart-summary")).to_contain_text("Now: 1,400 credits.")
    assert await fits_the_screen(page)
    png = await page.screenshot(full_page=True)
    assert png.startswith(b"\x89PNG")

    await page.get_by_role("button", name="Sign out").click()

    await expect(page.get_by_label("Your credits token")).to_be_visible()
    await expect(page.locator("#account")).to_be_hidden()
    await expect(page.locator("#balance")).to_have_text("")
    assert (await stored(page))["session"] == {}
    await page.reload()
    await expect(page.get_by_label("Your credits token")).to_be_visible()
    assert watch.problems == []


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (500, "usd", "$5.00"),
        (500, "jpy", "¥500"),  # zero-decimal: 500 is 500 yen
        (70000, "krw", "₩70,000"),
        # Two decimals at Stripe, none in the browser's Intl: shown 100 times too much.
        (10000, "isk", "ISK 100"),
        (150000, "idr", "IDR 1,500"),
        (1234560, "kwd", "KWD 1,234.560"),  # three-decimal
    ],
)
async def test_a_purchase_shows_its_amount_in_the_units_stripe_charged(
    context: BrowserContext,
    http: httpx.AsyncClient,
    customer: Customer,
    amount: int,
    currency: str,
    shown: str,
) -> None:
    """The page took a currency's decimals from the browser (Intl), which has none for ISK,
    HUF, IDR, COP, PKR and others where Stripe's amounts have two."""
    from playwright.async_api import Route, expect

    base_url = f"{http.base_url}".rstrip("/")
    purchase = {
        "session_id": "cs_test_shown",
        "credits": 500,
        "amount": amount,
        "currency": currency,
        "status": "paid",
        "needs_review": False,
        "credits_clawed_back": 0,
        "credits_reversed": 0,
        "created_at": "2026-12-01T09:00:00Z",
    }

    async def purchases(route: Route) -> None:  # as the service lists one bought so
        await route.fulfill(json={"data": [purchase], "has_more": False, "next_after": None})

    watch = await watched(context, base_url)
    await watch.page.route(re.compile(r".*/v1/credits/purchases\?.*"), purchases)
    await sign_in(watch.page, base_url, customer.token)

    row = watch.page.locator('#purchases tr[data-session-id="cs_test_shown"]')
    await expect(row.locator("td").nth(2)).to_have_text(shown)
    assert watch.problems == []


@pytest.mark.parametrize(
    ("which", "error"),
    [
        ("unknown", "This token was not accepted: it is unknown or has been revoked."),
        ("internal", "This token cannot read an account's credits."),
    ],
)
async def test_a_wrong_token_shows_a_clear_error_and_stores_nothing(
    context: BrowserContext,
    http: httpx.AsyncClient,
    writer_headers: dict[str, str],
    which: str,
    error: str,
) -> None:
    from playwright.async_api import expect

    base_url = f"{http.base_url}".rstrip("/")
    token = {
        "unknown": "cl_not_a_token_" + uuid.uuid4().hex,
        "internal": writer_headers["Authorization"].removeprefix("Bearer "),
    }[which]
    watch = await watched(context, base_url)
    page = watch.page

    await sign_in(page, base_url, token)

    field = page.get_by_label("Your credits token")
    await expect(page.locator("#token-error")).to_contain_text(error)
    await expect(page.locator("#token-error")).to_have_attribute("aria-live", "assertive")
    await expect(field).to_have_attribute("aria-invalid", "true")
    await expect(field).to_be_focused()
    await expect(page.locator("#account")).to_be_hidden()
    assert await stored(page) == {"session": {}, "local": {}, "cookies": []}
    assert page.url == f"{base_url}/account"
    assert watch.purchases == []
    assert watch.problems == []


async def test_a_cancelled_checkout_returns_to_the_account_page_with_nothing_charged(
    context: BrowserContext, http: httpx.AsyncClient, customer: Customer
) -> None:
    from playwright.async_api import expect

    base_url = f"{http.base_url}".rstrip("/")
    watch = await watched(context, base_url)
    page = watch.page
    await sign_in(page, base_url, customer.token)
    await expect(page.locator("#balance")).to_have_attribute("data-value", "1000")
    await page.get_by_label("Credits to buy").fill("700")
    async with page.expect_navigation(url=re.compile(r"/c/pay/cs_")):
        await page.get_by_role("button", name="Buy credits").click()

    async with page.expect_navigation(url=re.compile(re.escape(f"{base_url}/checkout/cancel"))):
        await page.click("#cancel")
    async with page.expect_navigation(url=f"{base_url}/account"):
        await page.get_by_role("link", name="Back to your account").click()

    await expect(page.locator("#page-status")).to_have_text(
        "Purchase cancelled: nothing was charged."
    )
    await expect(page.locator("#balance")).to_have_attribute("data-value", "1000")
    assert (await stored(page))["session"] == {TOKEN_KEY: customer.token}  # still signed in
    assert watch.problems == []


async def test_purchases_say_what_chargebacks_took_and_which_payment_is_under_review(
    context: BrowserContext,
    http: httpx.AsyncClient,
    standin: RunningStandin,
    customer: Customer,
    services: Services,
) -> None:
    """A refund and a chargeback both take credits back, and the row says how many; a
    payment of another amount than asked is not "waiting for payment": the money came.
    The page counted refunds only, and showed a payment under review as unpaid."""
    from playwright.async_api import expect

    base_url = f"{http.base_url}".rstrip("/")
    stripe_key = {"Authorization": "Bearer sk_test_x"}

    async def bought(credits: int) -> dict[str, Any]:
        answer = await http.post(
            "/v1/credits/purchase", json={"credits": credits}, headers=customer.headers
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    # 600 paid; 200 of it refunded, then a chargeback of the other 400.
    disputed = await bought(600)
    paid = await http.post(
        f"{disputed['checkout_url']}/pay", headers={"Accept": "application/json"}
    )
    assert paid.status_code == 200, paid.text
    intent = paid.json()["session"]["payment_intent"]
    refunded = await http.post(
        f"{standin.base_url}/v1/refunds",
        data={"payment_intent": intent, "amount": "200"},
        headers=stripe_key,
    )
    assert refunded.status_code == 200, refunded.text
    charge = refunded.json()["charge"]
    opened = await http.post(f"{standin.base_url}/_standin/charges/{charge}/dispute")
    assert opened.status_code == 200, opened.text
    assert opened.json()["dispute"]["amount"] == 400

    # 300 asked, 10 paid: recorded as a mismatch, pending until someone looks.
    underpaid = await bought(300)
    body = event_body(
        "checkout.session.completed",
        checkout_session(
            underpaid["session_id"], account_id=customer.account_id, credits=300, amount_total=10
        ),
    )
    delivered = await http.post(
        "/v1/stripe/webhook",
        content=body.encode(),
        headers={"Content-Type": "application/json", "Stripe-Signature": signature(body)},
    )
    assert delivered.status_code == 200, delivered.text
    await caught_up(services.store)

    listed = (await http.get("/v1/credits/purchases", headers=customer.headers)).json()["data"]
    by_session = {p["session_id"]: p for p in listed}
    chargeback = by_session[disputed["session_id"]]
    assert (chargeback["credits_clawed_back"], chargeback["credits_reversed"]) == (200, 400)
    review = by_session[underpaid["session_id"]]
    assert (review["status"], review["needs_review"]) == ("pending", True)

    watch = await watched(context, base_url)
    page = watch.page
    await sign_in(page, base_url, customer.token)

    rows = page.locator("#purchases tr[data-session-id]")
    await expect(rows).to_have_count(2)
    row = page.locator(f'#purchases tr[data-session-id="{disputed["session_id"]}"]')
    await expect(row.locator("td").nth(3)).to_have_text("Paid (600 taken back)")
    row = page.locator(f'#purchases tr[data-session-id="{underpaid["session_id"]}"]')
    await expect(row.locator("td").nth(3)).to_have_text("Payment received, under review")
    assert watch.problems == []
