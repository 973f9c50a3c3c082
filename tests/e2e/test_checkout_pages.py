"""The page Stripe Checkout sends the customer back to never refreshes in vain.

Only a pending purchase, seen through its own signed link, refreshes (until it is
credited). A link with no session id says it names no purchase; an unknown session
gets the fixed page that tells nothing (tests/e2e/test_checkout_success_page.py);
an expired or failed purchase says so to its link.
"""

from __future__ import annotations

import httpx
from litestar import Litestar

from api.services import Services
from tests.e2e.conftest import Customer
from tests.e2e.test_checkout_flow import AS_SCRIPT, pay, purchase

REFRESH = 'http-equiv="refresh"'


async def signed_link(services: Services, customer: Customer, session_id: str) -> dict[str, str]:
    """The success link's query, as Stripe is given it for this purchase."""
    session = await services.ledger.session(session_id)
    assert session is not None
    token = services.page_tokens.for_checkout(customer.account_id, session.expires_at)
    return {"session_id": session_id, "t": token}


async def test_a_link_without_a_session_id_says_it_names_no_purchase(
    http: httpx.AsyncClient,
) -> None:
    missing = await http.get("/checkout/success")
    empty = await http.get("/checkout/success", params={"session_id": "", "t": "1.x"})

    for page in (missing, empty):
        assert page.status_code == 400
        assert page.headers["content-type"].startswith("text/html")
        assert 'data-status="missing"' in page.text
        assert "has no <code>session_id</code>" in page.text
        assert REFRESH not in page.text


async def test_an_unknown_session_does_not_refresh(http: httpx.AsyncClient) -> None:
    for params in ({"session_id": "cs_test_never_made"}, {"session_id": "cs_x", "t": "1.x"}):
        page = await http.get("/checkout/success", params=params)

        assert page.status_code == 200
        assert 'data-status="received"' in page.text
        assert REFRESH not in page.text


async def test_a_pending_purchase_refreshes_until_paid_then_shows_the_balance(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    bought = await purchase(http, customer, 300)
    link = await signed_link(services, customer, bought.session_id)

    pending = await http.get("/checkout/success", params=link)
    await pay(http, bought)
    paid = await http.get("/checkout/success", params=link)

    assert 'data-status="confirming"' in pending.text
    assert REFRESH in pending.text
    assert 'data-status="credited"' in paid.text
    assert REFRESH not in paid.text


async def test_an_expired_purchase_says_it_was_not_completed_instead_of_refreshing(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    bought = await purchase(http, customer, 300)
    expired = await http.post(f"{bought.checkout_url}/expire", headers=AS_SCRIPT)
    assert expired.status_code == 200, expired.text

    page = await http.get(
        "/checkout/success", params=await signed_link(services, customer, bought.session_id)
    )

    assert page.status_code == 200
    assert 'data-status="expired"' in page.text
    assert "expired before it was paid; nothing was charged" in page.text
    assert REFRESH not in page.text


async def test_the_page_shows_a_payment_another_replica_recorded(
    http: httpx.AsyncClient,
    replica: httpx.AsyncClient,
    replica_app: Litestar,
    customer: Customer,
) -> None:
    """The replica that took the purchase holds its session in memory; Stripe's webhook
    reached another replica. The page reads the store, so it does not refresh for ever."""
    bought = await purchase(replica, customer, 300)
    link = await signed_link(replica_app.state.services, customer, bought.session_id)
    await pay(http, bought)  # the webhook goes to the first API

    page = await replica.get("/checkout/success", params=link)

    assert 'data-status="credited"' in page.text
    assert 'data-balance="1300"' in page.text
