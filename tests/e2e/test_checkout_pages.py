"""The page Stripe Checkout sends the customer back to, for every state a session can be in."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import Customer
from tests.e2e.test_checkout_flow import AS_SCRIPT, pay, purchase

REFRESH = 'http-equiv="refresh"'


async def test_a_missing_or_unknown_session_id_says_so_and_does_not_refresh(
    http: httpx.AsyncClient,
) -> None:
    missing = await http.get("/checkout/success")
    empty = await http.get("/checkout/success", params={"session_id": ""})
    unknown = await http.get("/checkout/success", params={"session_id": "cs_test_never_made"})
    hostile = await http.get("/checkout/success", params={"session_id": "<b>cs</b>"})

    for page in (missing, empty):
        assert page.status_code == 400
        assert 'data-status="missing"' in page.text
        assert "has no <code>session_id</code>" in page.text
    assert unknown.status_code == 404
    assert 'data-status="unknown"' in unknown.text
    assert "<code>cs_test_never_made</code>" in unknown.text
    assert hostile.status_code == 404
    assert "&lt;b&gt;cs&lt;/b&gt;" in hostile.text
    for page in (missing, empty, unknown, hostile):
        assert page.headers["content-type"].startswith("text/html")
        assert REFRESH not in page.text


async def test_a_pending_session_refreshes_until_paid_then_shows_the_balance(
    http: httpx.AsyncClient, customer: Customer
) -> None:
    bought = await purchase(http, customer, 300)

    pending = await http.get("/checkout/success", params={"session_id": bought.session_id})
    await pay(http, bought)
    paid = await http.get("/checkout/success", params={"session_id": bought.session_id})

    assert pending.status_code == 200
    assert 'data-status="confirming"' in pending.text
    assert REFRESH in pending.text
    assert paid.status_code == 200
    assert 'data-status="credited"' in paid.text
    assert REFRESH not in paid.text


async def test_an_expired_session_says_it_was_not_completed_instead_of_refreshing(
    http: httpx.AsyncClient, customer: Customer
) -> None:
    bought = await purchase(http, customer, 300)
    expired = await http.post(f"{bought.checkout_url}/expire", headers=AS_SCRIPT)
    assert expired.status_code == 200, expired.text

    page = await http.get("/checkout/success", params={"session_id": bought.session_id})

    assert page.status_code == 200
    assert 'data-status="expired"' in page.text
    assert REFRESH not in page.text
