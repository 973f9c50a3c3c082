"""Debian's Chromium driven by Playwright (never Playwright's own download), and the checkout form.

``make browser`` installs ``/usr/bin/chromium``; without it, or without the ``playwright``
package, the tests that need a browser are skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


def chromium_installed() -> bool:
    return CHROMIUM.exists()


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium for the block (skips the test when none can run)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[test]' -c constraints.txt")
    if not chromium_installed():
        pytest.skip("Chromium is not installed: run `make browser` or apt-get install chromium")
    async with async_playwright() as playwright:
        # launch() gives Chromium a fresh temporary profile and removes it on close.
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield launched
        finally:
            await launched.close()


async def fill_checkout(
    page: Page,
    card_number: str = "4242 4242 4242 4242",
    *,
    email: str = "ada@example.com",
    expiry: str = "12 / 34",
    cvc: str = "123",
    name: str = "Ada Lovelace",
) -> None:
    """Type an email and a card into the stand-in's hosted checkout page, as a customer would."""
    await page.fill("#email", email)
    await page.check("#method-card")
    await page.fill("#card-number", card_number)
    await page.fill("#card-expiry", expiry)
    await page.fill("#card-cvc", cvc)
    await page.fill("#card-name", name)
