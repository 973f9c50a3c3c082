"""The Stripe stand-in, driven over HTTP by the real stripe SDK (never patched)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import stripe

from ledger.domain.currencies import STRIPE_CURRENCIES
from stripe_standin import RunningStandin, run_standin
from stripe_standin.money import CURRENCIES
from tests.support import standin as support
from tests.support.standin import stripe_client


@pytest.fixture(scope="module")
async def standin() -> AsyncIterator[RunningStandin]:
    async with run_standin() as running:
        yield running


@pytest.fixture
async def client(standin: RunningStandin) -> AsyncIterator[stripe.StripeClient]:
    # One HTTPXClient per test: it must not outlive (or be shared across) event loops.
    async with stripe_client(standin.base_url) as client:
        yield client


@pytest.fixture
async def http(standin: RunningStandin) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=standin.base_url) as http_client:
        yield http_client


def join(path: tuple[Any, ...]) -> str:
    """``("a", 0, "b")`` -> ``"a[0][b]"``, Stripe's name for a nested parameter."""
    return str(path[0]) + "".join(f"[{step}]" for step in path[1:])


def top_up(credits: int = 1000, account: str = "acct_1") -> Any:
    """The support's top-up parameters, expiring in an hour."""
    return support.top_up(credits, account, expires_at=int(time.time()) + 3600)


async def test_create_returns_a_stripe_shaped_session(
    client: stripe.StripeClient, standin: RunningStandin
) -> None:
    params = top_up(credits=1500, account="acct_42")

    session = await client.v1.checkout.sessions.create_async(params=params)

    assert session.object == "checkout.session"
    assert session.id.startswith("cs_test_")
    assert len(session.id) > 50
    assert session.amount_subtotal == session.amount_total == 1500
    assert session.currency == "usd"
    assert session.metadata is not None
    assert session.metadata.to_dict() == {"account_id": "acct_42"}
    assert session.client_reference_id == "acct_42"
    assert session.expires_at == params["expires_at"]
    assert session.mode == "payment"
    assert (session.status, session.payment_status) == ("open", "unpaid")
    assert session.payment_intent is None
    assert session.livemode is False
    assert session.success_url == params["success_url"]
    assert session.url == f"{standin.base_url}/c/pay/{session.id}"
    assert "line_items" not in session
    assert session.last_response is not None
    assert session.last_response.headers["Request-Id"].startswith("req_")


async def test_default_expiry_is_24_hours(client: stripe.StripeClient) -> None:
    params = top_up()
    del params["expires_at"]

    session = await client.v1.checkout.sessions.create_async(params=params)

    assert session.expires_at - session.created == 24 * 60 * 60


async def test_retrieve_returns_the_session_and_expands_line_items(
    client: stripe.StripeClient,
) -> None:
    created = await client.v1.checkout.sessions.create_async(params=top_up(credits=700))

    fetched = await client.v1.checkout.sessions.retrieve_async(
        created.id, params={"expand": ["line_items"]}
    )

    assert fetched.id == created.id
    assert fetched.amount_total == 700
    assert fetched.line_items is not None
    [item] = fetched.line_items.data
    assert item.price is not None
    assert (item.quantity, item.price.unit_amount, item.description) == (700, 1, "Credits")


async def test_idempotent_replay_returns_the_same_session(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    params = top_up(account="acct_idem")
    options: Any = {"idempotency_key": "replay-key"}

    first = await client.v1.checkout.sessions.create_async(params=params, options=options)
    again = await client.v1.checkout.sessions.create_async(params=params, options=options)

    assert again.id == first.id
    assert again.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    stored = (await http.get("/_standin/sessions")).json()["data"]
    assert [s["id"] for s in stored if s["client_reference_id"] == "acct_idem"] == [first.id]


async def test_reused_key_with_other_params_is_an_idempotency_error(
    client: stripe.StripeClient,
) -> None:
    options: Any = {"idempotency_key": "reused-key"}
    await client.v1.checkout.sessions.create_async(params=top_up(credits=100), options=options)

    with pytest.raises(stripe.IdempotencyError, match="reused-key"):
        await client.v1.checkout.sessions.create_async(params=top_up(credits=200), options=options)


async def test_idempotency_keys_are_scoped_per_api_key(
    client: stripe.StripeClient, standin: RunningStandin
) -> None:
    options: Any = {"idempotency_key": "shared-key"}
    mine = await client.v1.checkout.sessions.create_async(params=top_up(), options=options)
    async with stripe_client(standin.base_url, "sk_test_other") as other:
        theirs = await other.v1.checkout.sessions.create_async(
            params=top_up(credits=500), options=options
        )

    assert theirs.id != mine.id


async def test_missing_mode_is_an_invalid_request(client: stripe.StripeClient) -> None:
    params = top_up()
    del params["mode"]

    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.checkout.sessions.create_async(params=params)

    assert caught.value.param == "mode"
    assert caught.value.code == "parameter_missing"
    assert caught.value.user_message == "Missing required param: mode."
    assert caught.value.http_status == 400


DELETE = object()
PRICE = ("line_items", 0, "price_data")


@pytest.mark.parametrize(
    ("path", "value", "param", "code"),
    [
        (("mode",), "rent", "mode", None),
        (("success_url",), DELETE, "success_url", "parameter_missing"),
        (("success_url",), "", "success_url", "parameter_invalid_empty"),
        (("success_url",), "not a url", "success_url", "url_invalid"),
        (("line_items",), DELETE, "line_items", "parameter_missing"),
        (("line_items", 0, "quantity"), DELETE, "line_items[0][quantity]", "parameter_missing"),
        (
            ("line_items", 0, "quantity"),
            "1.5",
            "line_items[0][quantity]",
            "parameter_invalid_integer",
        ),
        (("line_items", 0, "quantity"), 0, "line_items[0][quantity]", "parameter_invalid_integer"),
        ((*PRICE, "unit_amount"), -1, f"{join(PRICE)}[unit_amount]", "parameter_invalid_integer"),
        ((*PRICE, "unit_amount"), 0, "line_items", None),  # under Stripe's $0.50 minimum
        ((*PRICE, "currency"), DELETE, f"{join(PRICE)}[currency]", "parameter_missing"),
        ((*PRICE, "currency"), "dollars", f"{join(PRICE)}[currency]", "invalid_currency"),
        ((*PRICE, "currency"), "xyz", f"{join(PRICE)}[currency]", "invalid_currency"),
        (("currency",), "xau", "currency", "invalid_currency"),
        (
            (*PRICE, "product_data"),
            {"description": "no name"},
            f"{join(PRICE)}[product_data][name]",
            "parameter_missing",
        ),
        (("expires_at",), int(time.time()) + 60, "expires_at", None),
        (("expires_at",), int(time.time()) + 25 * 3600, "expires_at", None),
        (("bogus",), "1", "bogus", "parameter_unknown"),
    ],
)
async def test_invalid_parameters_are_reported_like_stripe(
    client: stripe.StripeClient, path: tuple[Any, ...], value: Any, param: str, code: str | None
) -> None:
    params = top_up()
    target = params
    for step in path[:-1]:
        target = target[step]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value

    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.checkout.sessions.create_async(params=params)

    assert (caught.value.param, caught.value.code) == (param, code)


async def test_a_currency_stripe_does_not_take_is_refused_as_stripe_refuses_it(
    client: stripe.StripeClient,
) -> None:
    """Stripe refuses a currency not on its list, three letters or not, naming those it
    takes: a session in it is never made (the stand-in made one, which nobody could pay)."""
    params = top_up()
    params["line_items"][0]["price_data"]["currency"] = "XTS"

    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.checkout.sessions.create_async(params=params)

    assert caught.value.http_status == 400
    assert caught.value.user_message is not None
    assert caught.value.user_message.startswith(
        "Invalid currency: xts. Stripe currently supports these currencies: usd, aed, afn, "
    )
    params["line_items"][0]["price_data"]["currency"] = "EUR"  # Stripe takes either case
    session = await client.v1.checkout.sessions.create_async(params=params)
    assert session.currency == "eur"


def test_the_stand_in_takes_the_currencies_the_ledger_knows_stripe_takes() -> None:
    """Two copies of Stripe's list, as the stand-in imports nothing of the ledger's."""
    assert CURRENCIES == STRIPE_CURRENCIES


async def test_unknown_session_is_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.checkout.sessions.retrieve_async("cs_test_nope")

    assert caught.value.code == "resource_missing"
    assert caught.value.http_status == 404
    assert caught.value.user_message == "No such checkout.session: 'cs_test_nope'"


async def test_bad_api_key_is_an_authentication_error(standin: RunningStandin) -> None:
    async with stripe_client(standin.base_url, "pk_test_not_secret") as client:
        with pytest.raises(stripe.AuthenticationError, match="Invalid API Key provided"):
            await client.v1.checkout.sessions.create_async(params=top_up())


async def test_missing_api_key_is_401(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/checkout/sessions", content=b"mode=payment")

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.headers["Request-Id"].startswith("req_")


async def test_fail_next_makes_the_sdk_raise_api_error(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    armed = await http.post("/_standin/fail-next", json={"status": 500, "count": 1})
    assert armed.status_code == 200

    with pytest.raises(stripe.APIError) as caught:
        await client.v1.checkout.sessions.create_async(params=top_up())
    assert caught.value.http_status == 500

    session = await client.v1.checkout.sessions.create_async(params=top_up())
    assert session.status == "open"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/_standin/fail-next", {"status": "x"}),
        ("/_standin/fail-next", {"status": 200}),
        ("/_standin/fail-next", {"count": -1}),
        ("/_standin/fail-next", {"bogus": 1}),
        ("/_standin/fail-next", [1]),
        ("/_standin/webhook-endpoint", {"url": 5}),
        ("/_standin/webhook-endpoint", {}),
    ],
)
async def test_a_control_refused_is_a_stripe_shaped_400(
    http: httpx.AsyncClient, path: str, body: Any
) -> None:
    """docs/stripe-standin.md: the controls' errors are Stripe-shaped, as the API's are."""
    refused = await http.post(path, json=body)

    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]


async def test_hosted_page_shows_credits_amount_and_buttons(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    session = await client.v1.checkout.sessions.create_async(params=top_up(credits=2500))
    assert session.url is not None

    page = await http.get(session.url)

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "2500 credits" in page.text
    assert "$25.00" in page.text
    for button in ("Pay", "Cancel", "Expire"):
        assert f">{button}</button>" in page.text


async def test_hosted_page_for_unknown_session_is_404(http: httpx.AsyncClient) -> None:
    page = await http.get("/c/pay/cs_test_nope")

    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")


async def test_pay_marks_the_session_paid(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    session = await client.v1.checkout.sessions.create_async(params=top_up())

    paid = await http.post(f"/c/pay/{session.id}/pay")
    assert paid.status_code == 200
    assert paid.json()["session"]["payment_status"] == "paid"

    fetched = await client.v1.checkout.sessions.retrieve_async(session.id)
    assert (fetched.status, fetched.payment_status) == ("complete", "paid")
    assert isinstance(fetched.payment_intent, str)
    assert fetched.payment_intent.startswith("pi_")
    assert (await http.post(f"/c/pay/{session.id}/pay")).status_code == 400


async def test_expire_marks_the_session_expired(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    session = await client.v1.checkout.sessions.create_async(params=top_up())

    assert (await http.post(f"/c/pay/{session.id}/expire")).status_code == 200

    fetched = await client.v1.checkout.sessions.retrieve_async(session.id)
    assert (fetched.status, fetched.payment_status, fetched.url) == ("expired", "unpaid", None)


async def test_the_api_expires_an_open_session_and_refuses_one_not_open(
    client: stripe.StripeClient,
) -> None:
    session = await client.v1.checkout.sessions.create_async(params=top_up())

    expired = await client.v1.checkout.sessions.expire_async(session.id)

    assert (expired.id, expired.status, expired.url) == (session.id, "expired", None)
    with pytest.raises(stripe.InvalidRequestError, match="can be expired"):
        await client.v1.checkout.sessions.expire_async(session.id)


async def test_misprice_next_changes_the_next_sessions_total_and_currency(
    client: stripe.StripeClient, http: httpx.AsyncClient
) -> None:
    await http.post("/_standin/misprice-next", json={"amount_total": 700, "currency": "eur"})

    mispriced = await client.v1.checkout.sessions.create_async(params=top_up(credits=1000))
    priced = await client.v1.checkout.sessions.create_async(params=top_up(credits=1000))

    assert (mispriced.amount_total, mispriced.currency) == (700, "eur")
    assert (priced.amount_total, priced.currency) == (1000, "usd")


async def test_line_items_can_be_listed(client: stripe.StripeClient) -> None:
    session = await client.v1.checkout.sessions.create_async(params=top_up(credits=900))

    items = await client.v1.checkout.sessions.line_items.list_async(session.id)

    assert [(item.quantity, item.amount_total) for item in items.data] == [(900, 900)]
