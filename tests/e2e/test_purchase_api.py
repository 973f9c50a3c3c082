"""POST /v1/credits/purchase over real HTTP, with the real Stripe SDK and the stand-in."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.access.tokens import Scope
from api.services import Services
from ledger.adapters.stripe_webhooks import MARK_KEY, MARK_VALUE
from ledger.store.event_store import EventStore
from stripe_standin import RunningStandin
from tests.conftest import unique
from tests.e2e.conftest import Customer, served_api
from tests.support.events import events_since, tail_position
from tests.support.ledger import open_account

PURCHASE = "/v1/credits/purchase"


async def checkout_requests(store: EventStore, since: int, account_id: str) -> list[dict[str, Any]]:
    return [
        data
        for kind, data in await events_since(store, since)
        if kind == "CheckoutRequested" and data["account_id"] == account_id
    ]


async def purchase_while_stripe_fails(
    http: httpx.AsyncClient,
    standin: RunningStandin,
    fault: dict[str, Any],
    credits: int,
    headers: dict[str, str],
) -> httpx.Response:
    """A purchase of ``credits`` while the stand-in fails its calls as ``fault`` says
    (``/_standin/fail-next``), the fault taken back after it whatever happened."""
    await http.post(f"{standin.base_url}/_standin/fail-next", json=fault)
    try:
        return await http.post(PURCHASE, json={"credits": credits}, headers=headers)
    finally:
        await http.post(f"{standin.base_url}/_standin/fail-next", json={"count": 0})


async def test_purchase_creates_a_checkout_session_and_records_it(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    start = await tail_position(services.store)

    response = await http.post(PURCHASE, json={"credits": 1000}, headers=customer.headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"checkout_url", "session_id"}
    assert body["session_id"].startswith("cs_")
    [recorded] = await checkout_requests(services.store, start, customer.account_id)
    assert recorded["session_id"] == body["session_id"]
    assert recorded["credits"] == 1000
    assert recorded["amount"] == 1000  # CREDIT_UNIT_AMOUNT defaults to 1 cent
    assert recorded["currency"] == "usd"
    assert recorded["checkout_url"] == body["checkout_url"]


async def test_the_checkout_url_opens_a_page_showing_the_credits(
    http: httpx.AsyncClient, customer: Customer
) -> None:
    response = await http.post(PURCHASE, json={"credits": 2500}, headers=customer.headers)

    page = await http.get(response.json()["checkout_url"])

    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "2,500" in page.text or "2500" in page.text


async def test_stripe_receives_the_purchase_details(
    http: httpx.AsyncClient, customer: Customer, standin: RunningStandin
) -> None:
    response = await http.post(PURCHASE, json={"credits": 300}, headers=customer.headers)
    session_id = response.json()["session_id"]

    sessions = (await http.get(f"{standin.base_url}/_standin/sessions")).json()
    session = next(s for s in _session_list(sessions) if s["id"] == session_id)

    assert session["mode"] == "payment"
    assert session["amount_total"] == 300
    assert session["client_reference_id"] == customer.account_id
    assert session["metadata"] == {
        "account_id": customer.account_id,
        "credits": "300",
        "unit_amount": "1",
        "currency": "usd",
        MARK_KEY: MARK_VALUE,
    }
    # The success link carries the page's signed token (api/access/page_tokens.py).
    assert re.search(
        r"/checkout/success\?session_id=\{CHECKOUT_SESSION_ID\}&t=\d+\.[\w-]+$",
        session["success_url"],
    )
    assert session["expires_at"] > session["created"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Bearer ldg_0000000000000000_guessed"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
)
async def test_purchase_without_a_valid_token_is_401(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await http.post(PURCHASE, json={"credits": 1000}, headers=headers)

    assert response.status_code == 401
    assert response.json() == {"message": "Unauthenticated."}


async def test_a_revoked_token_is_refused_at_once(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    principal = await services.tokens.authenticate(customer.token)
    assert principal is not None
    assert await services.tokens.revoke(principal.token_id)

    response = await http.post(PURCHASE, json={"credits": 1000}, headers=customer.headers)

    assert response.status_code == 401


async def test_an_internal_token_cannot_buy_credits(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    response = await http.post(PURCHASE, json={"credits": 1000}, headers=writer_headers)

    assert response.status_code == 403
    assert response.json() == {"message": "This action is unauthorized."}


REQUIRED = "The credits field is required."
NOT_INTEGER = "The credits field must be an integer."
TOO_FEW = "The credits must be at least 100."
TOO_MANY = "The credits must not be greater than 10000."


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{}", REQUIRED),
        ("", REQUIRED),  # no body: no fields (as Laravel, whose words these are)
        ('{"credits": null}', REQUIRED),
        ('{"other": 1000}', REQUIRED),
        ('{"credits": 1000.5}', NOT_INTEGER),
        ('{"credits": 1000.0}', NOT_INTEGER),
        ('{"credits": "1000"}', NOT_INTEGER),
        ('{"credits": true}', NOT_INTEGER),
        ('{"credits": [1000]}', NOT_INTEGER),
        ('{"credits": {"n": 1}}', NOT_INTEGER),
        ('{"credits": 99}', TOO_FEW),
        ('{"credits": -5}', TOO_FEW),
        ('{"credits": 10001}', TOO_MANY),
        ('{"credits": 100000000000000000000000000}', TOO_MANY),
    ],
)
async def test_invalid_credits_are_422_with_the_contract_message(
    http: httpx.AsyncClient, customer: Customer, services: Services, body: str, message: str
) -> None:
    start = await tail_position(services.store)

    response = await http.post(
        PURCHASE, content=body, headers={**customer.headers, "Content-Type": "application/json"}
    )

    assert response.status_code == 422
    assert response.json() == {"message": message, "errors": {"credits": [message]}}
    assert await checkout_requests(services.store, start, customer.account_id) == []


@pytest.mark.parametrize("body", ["credits=1000", "{", "[1000]", "1000", "\xff\xfe"])
async def test_a_body_that_is_not_a_json_object_is_422_not_500(
    http: httpx.AsyncClient, customer: Customer, body: str
) -> None:
    response = await http.post(
        PURCHASE,
        content=body.encode("latin-1"),
        headers={**customer.headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    payload = response.json()
    assert payload["message"].startswith("The request body must be")
    assert payload["errors"] == {"body": [payload["message"]]}


async def test_a_request_without_a_body_is_one_without_credits(
    http: httpx.AsyncClient, customer: Customer
) -> None:
    response = await http.post(PURCHASE, headers=customer.headers)

    assert response.status_code == 422
    assert response.json() == {"message": REQUIRED, "errors": {"credits": [REQUIRED]}}


async def test_the_limits_themselves_are_accepted(
    http: httpx.AsyncClient, customer: Customer
) -> None:
    for credits in (100, 10_000):
        response = await http.post(PURCHASE, json={"credits": credits}, headers=customer.headers)
        assert response.status_code == 200, response.text


async def test_when_stripe_fails_the_answer_is_502_and_nothing_is_recorded(
    http: httpx.AsyncClient, customer: Customer, services: Services, standin: RunningStandin
) -> None:
    start = await tail_position(services.store)
    response = await purchase_while_stripe_fails(
        http, standin, {"status": 500, "count": 10}, 1000, customer.headers
    )

    assert response.status_code == 502
    assert "payment provider" in response.json()["message"]
    assert await checkout_requests(services.store, start, customer.account_id) == []


@pytest.mark.parametrize(
    "misprice", [{"amount_total": 900}, {"currency": "eur"}], ids=["amount", "currency"]
)
async def test_a_session_stripe_made_for_another_price_is_expired_not_recorded(
    http: httpx.AsyncClient,
    customer: Customer,
    services: Services,
    standin: RunningStandin,
    misprice: dict[str, Any],
) -> None:
    """A coupon, a price set up in Stripe or another account makes Stripe's session total
    differ from credits x price: recorded, its payment would credit the credits for it."""
    start = await tail_position(services.store)
    made_before = set(standin.state.sessions)
    await http.post(f"{standin.base_url}/_standin/misprice-next", json=misprice)
    try:
        response = await http.post(PURCHASE, json={"credits": 1000}, headers=customer.headers)
    finally:
        await http.post(f"{standin.base_url}/_standin/misprice-next", json={"count": 0})

    assert response.status_code == 502, response.text
    assert "another amount" in response.json()["message"]
    assert await checkout_requests(services.store, start, customer.account_id) == []
    [made] = set(standin.state.sessions) - made_before
    assert standin.state.sessions[made].data["status"] == "expired"


@pytest.mark.parametrize("later", [timedelta(0), timedelta(minutes=1)], ids=["now", "later"])
async def test_a_mispriced_purchase_retried_under_its_key_is_asked_of_stripe_again(
    standin: RunningStandin, database_url: str, later: timedelta
) -> None:
    """A 502 'CheckoutMispriced' records nothing: each retry under the same Idempotency-Key
    is a fresh attempt, as after every other 502. Stripe gave the key's mispriced session
    back to every retry (the same key, the same parameters) and the ledger refused it
    again: 502 for the half hour the key's minutes are looked back, whatever Stripe's
    settings had become meanwhile."""
    clock = MovedClock()
    async with (
        served_api(
            database_url, standin, clock=clock, changes={"max_clock_skew_seconds": 3600}
        ) as app,
        httpx.AsyncClient(base_url=app.state.base_url, timeout=30) as http,
    ):
        services: Services = app.state.services
        account_id = unique("acct")
        await open_account(services.ledger, account_id, 1000)
        issued = await services.tokens.issue(Scope.CREDITS, account_id=account_id)
        headers = {"Authorization": f"Bearer {issued.secret}", "Idempotency-Key": "mispriced-1"}
        start = await tail_position(services.store)
        made_before = set(standin.state.sessions)
        # Two sessions in a row come back for 900: the purchase, then its first retry.
        misprice = {"amount_total": 900, "count": 2}
        await http.post(f"{standin.base_url}/_standin/misprice-next", json=misprice)
        try:
            mispriced = await http.post(PURCHASE, json={"credits": 1000}, headers=headers)
            clock.offset = later
            still = await http.post(PURCHASE, json={"credits": 1000}, headers=headers)
            retried = await http.post(PURCHASE, json={"credits": 1000}, headers=headers)
            again = await http.post(PURCHASE, json={"credits": 1000}, headers=headers)
        finally:
            await http.post(f"{standin.base_url}/_standin/misprice-next", json={"count": 0})

        assert [mispriced.status_code, still.status_code] == [502, 502], still.text
        assert "another amount" in still.json()["message"]
        assert retried.status_code == 200, retried.text
        assert again.json() == retried.json()
        made = set(standin.state.sessions) - made_before
        answered = retried.json()["session_id"]
        assert len(made) == 3
        assert answered in made
        refused = made - {answered}
        assert {standin.state.sessions[m].data["status"] for m in refused} == {"expired"}
        [recorded] = await checkout_requests(services.store, start, account_id)
        assert recorded["session_id"] == answered
        assert (recorded["amount"], recorded["currency"]) == (1000, "usd")


async def test_a_purchase_retried_after_the_price_changed_is_made_at_the_new_price(
    http: httpx.AsyncClient,
    customer: Customer,
    services: Services,
    standin: RunningStandin,
    database_url: str,
) -> None:
    """The first attempt's answer is lost after Stripe made its session; the retry, with
    the same key, reaches a replica already at the new price. Under one Stripe key,
    Stripe refused the other amount, and the retry was 502 "please try again" (as each
    one after it until the minute turned)."""
    start = await tail_position(services.store)
    headers = {**customer.headers, "Idempotency-Key": "repriced-1"}
    failed = await purchase_while_stripe_fails(
        http, standin, {"mode": "drop", "count": 3}, 500, headers
    )
    assert failed.status_code == 502, failed.text

    async with (
        served_api(database_url, standin, changes={"credit_unit_amount": 2}) as repriced,
        httpx.AsyncClient(base_url=repriced.state.base_url, timeout=30) as client,
    ):
        retried = await client.post(PURCHASE, json={"credits": 500}, headers=headers)

    assert retried.status_code == 200, retried.text
    [recorded] = await checkout_requests(services.store, start, customer.account_id)
    assert recorded["session_id"] == retried.json()["session_id"]
    assert recorded["amount"] == 1000


class MovedClock:
    """The wall clock, moved on by ``offset`` (a test moves it)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


async def test_a_purchase_retried_in_a_later_minute_after_a_lost_answer_gets_its_session(
    standin: RunningStandin, database_url: str
) -> None:
    """Stripe made the session and its answer was lost (as it is to a process that ends
    before it records it). The retry under the same key came in the next minute, asked
    Stripe for a session expiring a minute later under a key of that minute, and got a
    second session: the first, made for nobody, expired unpaid."""
    clock = MovedClock()
    async with (
        # A clock a minute apart from the database's is not refused here.
        served_api(
            database_url, standin, clock=clock, changes={"max_clock_skew_seconds": 3600}
        ) as app,
        httpx.AsyncClient(base_url=app.state.base_url, timeout=30) as http,
    ):
        services: Services = app.state.services
        account_id = unique("acct")
        await open_account(services.ledger, account_id, 1000)
        issued = await services.tokens.issue(Scope.CREDITS, account_id=account_id)
        headers = {"Authorization": f"Bearer {issued.secret}", "Idempotency-Key": "lost-1"}
        start = await tail_position(services.store)
        made_before = set(standin.state.sessions)
        lost = await purchase_while_stripe_fails(
            http, standin, {"mode": "drop", "count": 3}, 500, headers
        )
        assert lost.status_code == 502, lost.text
        [made] = set(standin.state.sessions) - made_before

        clock.offset = timedelta(minutes=1)
        retried = await http.post(PURCHASE, json={"credits": 500}, headers=headers)
        again = await http.post(PURCHASE, json={"credits": 500}, headers=headers)

        assert retried.status_code == 200, retried.text
        assert retried.json()["session_id"] == made
        assert again.json() == retried.json()
        assert set(standin.state.sessions) - made_before == {made}
        [recorded] = await checkout_requests(services.store, start, account_id)
        assert recorded["session_id"] == made


async def test_a_failure_stripe_saved_under_a_purchases_key_is_not_answered_again(
    http: httpx.AsyncClient, customer: Customer, services: Services, standin: RunningStandin
) -> None:
    """Stripe gives a key's first answer, a 500 too, to every retry under it: the purchase
    asks again under a key of its minute rather than answer 502 until it turns."""
    start = await tail_position(services.store)
    headers = {**customer.headers, "Idempotency-Key": "saved-500"}
    response = await purchase_while_stripe_fails(
        http, standin, {"status": 500, "count": 3, "replayed": True}, 400, headers
    )

    assert response.status_code == 200, response.text
    [recorded] = await checkout_requests(services.store, start, customer.account_id)
    assert recorded["session_id"] == response.json()["session_id"]


async def test_the_same_idempotency_key_returns_the_same_session(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    start = await tail_position(services.store)
    headers = {**customer.headers, "Idempotency-Key": "order-42"}

    first = await http.post(PURCHASE, json={"credits": 500}, headers=headers)
    second = await http.post(PURCHASE, json={"credits": 500}, headers=headers)

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert len(await checkout_requests(services.store, start, customer.account_id)) == 1


async def test_concurrent_requests_with_one_key_make_one_session(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    start = await tail_position(services.store)
    headers = {**customer.headers, "Idempotency-Key": "burst-1"}

    responses = await asyncio.gather(
        *(http.post(PURCHASE, json={"credits": 700}, headers=headers) for _ in range(10))
    )

    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["session_id"] for r in responses}) == 1
    assert len(await checkout_requests(services.store, start, customer.account_id)) == 1


async def test_one_key_sent_at_once_to_two_replicas_makes_one_purchase(
    http: httpx.AsyncClient, replica: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    """Replicas whose links differ (each its own page key, as here, or a deploy under way)
    asked Stripe other parameters under one Stripe key: one of them was 502."""
    start = await tail_position(services.store)
    headers = {**customer.headers, "Idempotency-Key": "two-replicas"}

    responses = await asyncio.gather(
        *(api.post(PURCHASE, json={"credits": 800}, headers=headers) for api in [http, replica] * 2)
    )

    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    assert len({r.json()["session_id"] for r in responses}) == 1
    assert len(await checkout_requests(services.store, start, customer.account_id)) == 1


async def test_concurrent_requests_reusing_one_key_for_other_credits_are_422_not_502(
    http: httpx.AsyncClient, customer: Customer, services: Services, standin: RunningStandin
) -> None:
    """Each refused one that asked Stripe before the first recorded got a session, never
    shown: it is expired there (tests/integration/test_purchase_races.py makes them race)."""
    start = await tail_position(services.store)
    made_before = set(standin.state.sessions)
    headers = {**customer.headers, "Idempotency-Key": "burst-2"}

    # Each asks Stripe before any has recorded the key: under one Stripe idempotency key,
    # Stripe refused every body but the first, and they were answered 502 "try again".
    responses = await asyncio.gather(
        *(http.post(PURCHASE, json={"credits": 500 + n}, headers=headers) for n in range(4))
    )

    assert sorted(r.status_code for r in responses) == [200, 422, 422, 422], [
        r.text for r in responses
    ]
    refused = [r.json() for r in responses if r.status_code == 422]
    assert all("Idempotency-Key" in body["errors"] for body in refused)
    [recorded] = await checkout_requests(services.store, start, customer.account_id)
    made = set(standin.state.sessions) - made_before
    assert {session: standin.state.sessions[session].data["status"] for session in made} == {
        session: "open" if session == recorded["session_id"] else "expired" for session in made
    }


async def test_a_reused_key_with_a_different_body_is_422(
    http: httpx.AsyncClient, customer: Customer
) -> None:
    headers = {**customer.headers, "Idempotency-Key": "order-43"}
    await http.post(PURCHASE, json={"credits": 500}, headers=headers)

    response = await http.post(PURCHASE, json={"credits": 600}, headers=headers)

    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["errors"]


async def test_idempotency_keys_are_per_account(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    other_id = f"{customer.account_id}_other"
    await open_account(services.ledger, other_id, 1000)
    other = await services.tokens.issue(Scope.CREDITS, account_id=other_id)

    mine = await http.post(
        PURCHASE, json={"credits": 500}, headers={**customer.headers, "Idempotency-Key": "k"}
    )
    theirs = await http.post(
        PURCHASE,
        json={"credits": 500},
        headers={"Authorization": f"Bearer {other.secret}", "Idempotency-Key": "k"},
    )

    assert mine.json()["session_id"] != theirs.json()["session_id"]


def _session_list(payload: Any) -> list[dict[str, Any]]:
    return payload["data"] if isinstance(payload, dict) else payload
