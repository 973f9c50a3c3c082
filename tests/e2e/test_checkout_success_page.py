"""/checkout/success shows a purchase only to the signed link Stripe was given for it."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import httpx

from api.access.page_tokens import PageTokens
from api.access.tokens import Scope
from api.services import Services
from tests.conftest import unique
from tests.e2e.conftest import Customer
from tests.e2e.test_checkout_flow import pay, purchase
from tests.e2e.test_stripe_webhooks import deliver
from tests.support.ledger import open_account
from tests.support.stripe_events import checkout_session, event_body

RECEIVED = "Payment received. Your credits appear in your account shortly."


async def paid_link(http: httpx.AsyncClient, customer: Customer, credits: int) -> str:
    """Buy and pay; the success link as Stripe sends the browser to it."""
    bought = await purchase(http, customer, credits)
    answer = await pay(http, bought)
    template = answer["session"]["success_url"]
    return str(template.replace("{CHECKOUT_SESSION_ID}", bought.session_id))


def with_query(link: str, **params: str) -> str:
    parts = urlsplit(link)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(params)
    query = {k: v for k, v in query.items() if v}
    return parts._replace(query="&".join(f"{k}={v}" for k, v in query.items())).geturl()


async def test_the_signed_link_shows_the_credits_and_the_new_balance(
    http: httpx.AsyncClient, customer: Customer
) -> None:
    link = await paid_link(http, customer, 400)

    page = await http.get(link)

    assert page.status_code == 200
    assert 'data-status="credited"' in page.text
    assert customer.account_id in page.text
    assert 'data-balance="1400"' in page.text
    assert '<meta name="referrer" content="no-referrer">' in page.text


async def test_a_session_id_alone_shows_nothing_about_the_purchase(
    http: httpx.AsyncClient, customer: Customer
) -> None:
    link = await paid_link(http, customer, 300)
    session_id = parse_qs(urlsplit(link).query)["session_id"][0]

    alone = await http.get("/checkout/success", params={"session_id": session_id})
    unknown = await http.get("/checkout/success", params={"session_id": "cs_test_nobody"})
    bare = await http.get("/checkout/success")

    assert alone.status_code == unknown.status_code == 200
    assert RECEIVED in alone.text
    # The same page whatever the session: not its account, balance, credits or status.
    assert alone.text == unknown.text
    # No session id at all: the link names no purchase, and the page says so.
    assert bare.status_code == 400
    assert 'data-status="missing"' in bare.text
    assert customer.account_id not in alone.text
    assert "300" not in alone.text  # neither the credits nor the balance (1300)
    assert "refresh" not in alone.text


async def test_a_link_that_is_tampered_with_expired_or_another_accounts_shows_nothing(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    link = await paid_link(http, customer, 500)
    token = parse_qs(urlsplit(link).query)["t"][0]
    valid_until, mac = token.split(".")
    other = unique("acct")
    await open_account(services.ledger, other, 1000)
    tokens = services.page_tokens
    expired = PageTokens(tokens._key, clock=lambda: time.time() + 10 * 86400)
    later = int(valid_until) + 86400

    answers = [
        await http.get(with_query(link, t=f"{valid_until}.{mac[:-2]}AA")),  # a changed MAC
        await http.get(with_query(link, t=f"{later}.{mac}")),  # a longer life, same MAC
        await http.get(with_query(link, t=tokens.for_checkout(other, int(time.time()) + 60))),
        await http.get(with_query(link, t="garbage")),
        # Not ASCII: isdigit() took '²', and compare_digest raised (500s, an HTTP review).
        await http.get(with_query(link, t="%C2%B2.abc")),
        await http.get(with_query(link, t=f"{valid_until}.%C3%A9")),
    ]

    for page in answers:
        assert page.status_code == 200
        assert RECEIVED in page.text
        assert customer.account_id not in page.text
    assert not expired.shows(token, customer.account_id)  # the same token, ten days later
    assert tokens.shows(token, customer.account_id)


async def test_the_link_shows_the_purchase_while_it_is_being_confirmed(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    bought = await purchase(http, customer, 200)
    session = await services.ledger.session(bought.session_id)
    assert session is not None
    token = services.page_tokens.for_checkout(customer.account_id, session.expires_at)

    page = await http.get("/checkout/success", params={"session_id": bought.session_id, "t": token})

    assert 'data-status="confirming"' in page.text
    assert 'http-equiv="refresh"' in page.text


async def test_each_customers_link_is_made_for_their_own_account(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    other_account = unique("acct")
    await open_account(services.ledger, other_account, 1000)
    other = Customer(
        other_account,
        (await services.tokens.issue(Scope.CREDITS, account_id=other_account)).secret,
    )
    mine = await paid_link(http, customer, 100)
    theirs = await paid_link(http, other, 100)
    their_session = parse_qs(urlsplit(theirs).query)["session_id"][0]

    # My own valid link's token with their session id: nothing about their purchase.
    crossed = await http.get(with_query(mine, session_id=their_session))

    assert RECEIVED in crossed.text
    assert other_account not in crossed.text
    assert other_account in (await http.get(theirs)).text


async def test_a_purchase_paid_another_amount_says_it_is_under_review_and_stops_refreshing(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    """Paid another amount than it asked, a purchase is recorded for review and never
    credited: its link said "being confirmed" and refreshed every 2 s for good."""
    bought = await purchase(http, customer, 200)
    paid_less = checkout_session(
        bought.session_id, account_id=customer.account_id, credits=200, amount_total=100
    )
    answered = await deliver(http, event_body("checkout.session.completed", paid_less))
    assert answered.status_code == 200, answered.text
    session = await services.ledger.session(bought.session_id, fresh=True)
    assert session is not None
    token = services.page_tokens.for_checkout(customer.account_id, session.expires_at)

    page = await http.get("/checkout/success", params={"session_id": bought.session_id, "t": token})

    assert 'data-status="review"' in page.text
    assert 'http-equiv="refresh"' not in page.text
