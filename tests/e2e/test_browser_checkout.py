"""A customer's purchase in a real browser: the hosted page, a test card, Pay, and the ledger's
success page.

Headless Chromium from Debian (``make browser`` installs it), driven by Playwright's async API
inside the suite's event loop. Playwright never downloads a browser of its own here.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from api.services import Services
from stripe_standin import RunningStandin
from tests.e2e.conftest import Customer
from tests.support.browser import chromium, fill_checkout

if TYPE_CHECKING:
    from playwright.async_api import Browser

TIMEOUT_MS = 15_000  # the success page refreshes itself every 2 s while confirming


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def test_a_purchase_paid_in_the_browser_lands_on_the_new_balance(
    browser: Browser,
    http: httpx.AsyncClient,
    standin: RunningStandin,
    customer: Customer,
    services: Services,
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    credits = 1250
    response = await http.post(
        "/v1/credits/purchase", json={"credits": credits}, headers=customer.headers
    )
    assert response.status_code == 200, response.text
    session_id = response.json()["session_id"]
    amount = standin.state.sessions[session_id].data["amount_total"]
    context = await browser.new_context()
    try:
        page = await context.new_page()
        page.set_default_timeout(TIMEOUT_MS)

        await page.goto(response.json()["checkout_url"])

        await expect(page.locator("#credits")).to_have_attribute("data-credits", str(credits))
        await expect(page.locator("#credits")).to_contain_text(f"{credits} credits")
        await expect(page.locator("#amount")).to_have_attribute("data-amount", str(amount))
        await expect(page.locator("#amount")).to_have_attribute("data-currency", "usd")
        await expect(page.locator("#amount")).to_have_text(f"${amount // 100}.{amount % 100:02d}")

        success = re.compile(
            re.escape(f"{http.base_url}".rstrip("/"))
            + r"/checkout/success\?session_id="
            + re.escape(session_id)
        )
        await fill_checkout(page, "4242 4242 4242 4242")
        async with page.expect_navigation(url=success):
            await page.click("#pay")

        status = page.locator("#status")
        await expect(status).to_have_attribute("data-status", "credited")
        account = await services.ledger.account(customer.account_id)
        assert account.balance == 1000 + credits
        await expect(page.locator("#balance")).to_have_attribute(
            "data-balance", str(1000 + credits)
        )

        screenshot = tmp_path / "success.png"
        png = await page.screenshot(path=str(screenshot), full_page=True)
        assert png.startswith(b"\x89PNG")
        assert screenshot.stat().st_size == len(png) > 0
    finally:
        await context.close()
