"""POST /v1/stripe/webhook: signed deliveries become credits exactly once, in any order."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time

import httpx
import pytest

from api.services import Services
from ledger.adapters.stripe_webhooks import MARK_KEY
from ledger.domain.ids import account_stream_id, checkout_stream_id
from tests.conftest import unique
from tests.e2e.conftest import Customer
from tests.support.events import caught_up, events_since, stream_events, tail_position
from tests.support.ledger import open_account
from tests.support.stripe_events import (
    PREVIOUS_WEBHOOK_SECRET,
    charge,
    checkout_session,
    dispute,
    event_body,
    signature,
)

WEBHOOK = "/v1/stripe/webhook"


async def deliver(http: httpx.AsyncClient, body: str, header: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    headers["Stripe-Signature"] = signature(body) if header is None else header
    return await http.post(WEBHOOK, content=body.encode(), headers=headers)


async def purchase(http: httpx.AsyncClient, customer: Customer, credits: int) -> str:
    response = await http.post(
        "/v1/credits/purchase", json={"credits": credits}, headers=customer.headers
    )
    assert response.status_code == 200, response.text
    return str(response.json()["session_id"])


async def topup_balance(services: Services, account_id: str) -> int:
    return (await services.ledger.account(account_id)).topup_balance


async def account_event_types(services: Services, account_id: str) -> list[str]:
    return [t for t, _ in await stream_events(services.store, account_stream_id(account_id))]


async def session_event_types(services: Services, session_id: str) -> list[str]:
    return [t for t, _ in await stream_events(services.store, checkout_stream_id(session_id))]


async def test_a_paid_session_delivered_ten_times_at_once_credits_once(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    session_id = await purchase(http, customer, 1000)
    body = event_body(
        "checkout.session.completed",
        checkout_session(session_id, account_id=customer.account_id, credits=1000),
    )

    responses = await asyncio.gather(*(deliver(http, body) for _ in range(10)))

    assert [r.status_code for r in responses] == [200] * 10
    assert await topup_balance(services, customer.account_id) == 1000
    assert (await account_event_types(services, customer.account_id)).count("CreditsPurchased") == 1
    assert await session_event_types(services, session_id) == ["CheckoutRequested", "CheckoutPaid"]


async def test_distinct_events_for_one_paid_session_credit_once(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    session_id = await purchase(http, customer, 500)
    paid = checkout_session(session_id, account_id=customer.account_id, credits=500)

    # completed arrives after async_payment_succeeded, each with its own event id
    first = await deliver(http, event_body("checkout.session.async_payment_succeeded", paid))
    second = await deliver(http, event_body("checkout.session.completed", paid))
    late_expiry = await deliver(
        http, event_body("checkout.session.expired", {**paid, "status": "expired"})
    )

    assert first.status_code == second.status_code == late_expiry.status_code == 200
    assert await topup_balance(services, customer.account_id) == 500
    assert await session_event_types(services, session_id) == ["CheckoutRequested", "CheckoutPaid"]


async def test_completed_after_expired_still_credits_what_was_paid(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    session_id = await purchase(http, customer, 300)
    paid = checkout_session(session_id, account_id=customer.account_id, credits=300)

    await deliver(http, event_body("checkout.session.expired", {**paid, "status": "expired"}))
    await deliver(http, event_body("checkout.session.completed", paid))

    assert await topup_balance(services, customer.account_id) == 300
    assert await session_event_types(services, session_id) == [
        "CheckoutRequested",
        "CheckoutExpired",
        "CheckoutPaid",
    ]


async def test_an_expired_session_credits_nothing(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    session_id = await purchase(http, customer, 300)
    expired = checkout_session(
        session_id,
        account_id=customer.account_id,
        credits=300,
        payment_status="unpaid",
        status="expired",
    )

    response = await deliver(http, event_body("checkout.session.expired", expired))

    assert response.status_code == 200
    assert await topup_balance(services, customer.account_id) == 0
    assert await session_event_types(services, session_id) == [
        "CheckoutRequested",
        "CheckoutExpired",
    ]


async def test_a_delayed_payment_that_fails_credits_nothing(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    session_id = await purchase(http, customer, 300)
    unpaid = checkout_session(
        session_id, account_id=customer.account_id, credits=300, payment_status="unpaid"
    )

    await deliver(http, event_body("checkout.session.completed", unpaid))
    await deliver(http, event_body("checkout.session.async_payment_failed", unpaid))

    assert await topup_balance(services, customer.account_id) == 0
    assert await session_event_types(services, session_id) == [
        "CheckoutRequested",
        "CheckoutFailed",
    ]


async def test_a_delayed_payment_that_succeeds_credits_once(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    session_id = await purchase(http, customer, 400)
    session = checkout_session(session_id, account_id=customer.account_id, credits=400)

    await deliver(
        http, event_body("checkout.session.completed", {**session, "payment_status": "unpaid"})
    )
    assert await topup_balance(services, customer.account_id) == 0
    await deliver(http, event_body("checkout.session.async_payment_succeeded", session))

    assert await topup_balance(services, customer.account_id) == 400


@pytest.mark.parametrize(
    "header",
    [
        "",
        "t=1,v1=deadbeef",
        "garbage",
        "WRONG_SECRET",
        "STALE",
    ],
)
async def test_a_bad_or_stale_signature_is_400_and_records_nothing(
    http: httpx.AsyncClient, customer: Customer, services: Services, header: str
) -> None:
    session_id = await purchase(http, customer, 1000)
    body = event_body(
        "checkout.session.completed",
        checkout_session(session_id, account_id=customer.account_id, credits=1000),
    )
    if header == "WRONG_SECRET":
        header = signature(body, "whsec_not_ours")
    elif header == "STALE":
        header = signature(body, timestamp=int(time.time()) - 301)
    start = await tail_position(services.store)

    response = await deliver(http, body, header)

    assert response.status_code == 400
    assert response.json()["message"].startswith("Invalid Stripe webhook")
    assert await events_since(services.store, start) == []
    assert await topup_balance(services, customer.account_id) == 0


async def test_a_tampered_body_fails_its_signature(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    session_id = await purchase(http, customer, 100)
    body = event_body(
        "checkout.session.completed",
        checkout_session(session_id, account_id=customer.account_id, credits=100),
    )
    header = signature(body)

    response = await deliver(http, body.replace('"credits": "100"', '"credits": "9999"'), header)

    assert response.status_code == 400
    assert await topup_balance(services, customer.account_id) == 0


async def test_signatures_made_with_either_secret_pass_during_a_rollover(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    session_id = await purchase(http, customer, 200)
    body = event_body(
        "checkout.session.completed",
        checkout_session(session_id, account_id=customer.account_id, credits=200),
    )
    old = signature(body, PREVIOUS_WEBHOOK_SECRET)
    both = old + ",v1=" + signature(body, "whsec_unknown_new").split("v1=")[1]

    assert (await deliver(http, body, old)).status_code == 200
    assert (await deliver(http, body, both)).status_code == 200
    assert await topup_balance(services, customer.account_id) == 200


async def test_event_types_the_ledger_ignores_still_get_200(
    http: httpx.AsyncClient, services: Services
) -> None:
    start = await tail_position(services.store)

    response = await deliver(
        http, event_body("customer.created", {"id": "cus_1", "object": "customer"})
    )

    assert response.status_code == 200
    assert await events_since(services.store, start) == []


async def test_a_verified_body_that_is_not_an_event_is_200_records_nothing_and_is_said(
    http: httpx.AsyncClient, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """Signed with the secret, so Stripe would send the same bytes again for days on a 400:
    the contract's 200 for every verified delivery, nothing recorded, a warning line."""
    start = await tail_position(services.store)
    caplog.set_level(logging.WARNING, logger="api.routes.stripe_webhook")

    answers = [await deliver(http, body) for body in ["[]", '{"id": "evt_1"}', "not json"]]

    assert [(a.status_code, a.json()) for a in answers] == [(200, {"received": True})] * 3
    assert await events_since(services.store, start) == []
    dropped = [r for r in caplog.records if "dropped a verified Stripe delivery" in r.message]
    assert [r.levelno for r in dropped] == [logging.WARNING] * 3


def _too_long(prefix: str) -> str:
    """An id past Stripe's 255 characters that PostgreSQL cannot compress into an index."""
    return prefix + secrets.token_hex(2000)


@pytest.mark.parametrize(
    "where", ["event id", "session id", "payment intent of a refund", "dispute id"]
)
async def test_a_verified_event_with_an_id_longer_than_stripes_is_200_and_records_nothing(
    http: httpx.AsyncClient, customer: Customer, services: Services, where: str
) -> None:
    paid = checkout_session("cs_test_short", account_id=customer.account_id, credits=100)
    body = {
        "event id": lambda: event_body("customer.created", {"id": "cus_1"}, _too_long("evt_")),
        "session id": lambda: event_body(
            "checkout.session.completed", {**paid, "id": _too_long("cs_")}
        ),
        "payment intent of a refund": lambda: event_body(
            "charge.refunded", charge(_too_long("pi_"), amount=100, amount_refunded=100)
        ),
        "dispute id": lambda: event_body(
            "charge.dispute.created",
            dispute(_too_long("dp_"), "pi_test_short", amount=100, status="needs_response"),
        ),
    }[where]()
    start = await tail_position(services.store)

    response = await deliver(http, body)

    # Before: the event id and the payment intent's link overflowed the claims' index (500);
    # the session was recorded and the purchases view could not take it (the projector stuck).
    # Then 400, which Stripe retries for days: verified, it is 200 with nothing recorded.
    assert response.status_code == 200
    assert response.json() == {"received": True}
    assert await events_since(services.store, start) == []
    assert await topup_balance(services, customer.account_id) == 0


async def test_a_paid_session_the_store_never_saw_is_credited_from_its_metadata(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    session_id = "cs_test_never_recorded_" + customer.account_id

    response = await deliver(
        http,
        event_body(
            "checkout.session.completed",
            checkout_session(session_id, account_id=customer.account_id, credits=700),
        ),
    )

    assert response.status_code == 200
    assert await topup_balance(services, customer.account_id) == 700
    events = await stream_events(services.store, checkout_stream_id(session_id))
    assert [t for t, _ in events] == ["CheckoutRequested", "CheckoutPaid"]
    assert events[0][1]["recovered"] is True


async def test_a_paid_session_never_recorded_without_the_ledgers_mark_is_kept_for_review(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    """Another product on the same Stripe account may name an account of ours in metadata of
    the same keys, at the same price: its session was credited here (a review). Without the
    mark every session the ledger makes carries, it is recorded as a mismatch, not credited."""
    session_id = "cs_test_another_product_" + customer.account_id
    theirs = checkout_session(session_id, account_id=customer.account_id, credits=700)
    del theirs["metadata"][MARK_KEY]

    response = await deliver(http, event_body("checkout.session.completed", theirs))

    assert response.status_code == 200
    assert await topup_balance(services, customer.account_id) == 0
    events = await stream_events(services.store, checkout_stream_id(session_id))
    assert [t for t, _ in events] == ["CheckoutRequested", "PaymentMismatched"]
    assert events[0][1]["recovered"] is True
    await caught_up(services.store)
    listed = (await http.get("/v1/credits/purchases", headers=customer.headers)).json()["data"]
    [review] = [p for p in listed if p["session_id"] == session_id]
    assert (review["status"], review["needs_review"]) == ("pending", True)


async def test_a_recorded_session_is_credited_with_or_without_the_mark(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    """Sessions made before the ledger marked them carry no mark: recorded, they are paid."""
    session_id = await purchase(http, customer, 400)
    unmarked = checkout_session(session_id, account_id=customer.account_id, credits=400)
    del unmarked["metadata"][MARK_KEY]

    response = await deliver(http, event_body("checkout.session.completed", unmarked))

    assert response.status_code == 200
    assert await topup_balance(services, customer.account_id) == 400
    assert await session_event_types(services, session_id) == [
        "CheckoutRequested",
        "CheckoutPaid",
    ]


async def test_a_payment_that_does_not_match_the_request_credits_nothing(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    session_id = await purchase(http, customer, 1000)
    underpaid = checkout_session(
        session_id, account_id=customer.account_id, credits=1000, amount_total=10
    )

    await deliver(http, event_body("checkout.session.completed", underpaid))
    await deliver(
        http,
        event_body(
            "checkout.session.completed", {**underpaid, "amount_total": 1000, "currency": "eur"}
        ),
    )

    assert await topup_balance(services, customer.account_id) == 0
    events = await stream_events(services.store, checkout_stream_id(session_id))
    assert [t for t, _ in events] == ["CheckoutRequested", "PaymentMismatched"]
    assert events[1][1] == {**events[1][1], "amount_paid": 10, "currency": "usd"}


async def test_a_recorded_session_is_credited_as_recorded_whatever_its_metadata_says(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    """The credits, the amount and the account are the recorded request's: the metadata of
    the event (anyone's to write who makes sessions on the Stripe account) names none of
    them for a session the ledger recorded."""
    other = unique("acct")
    await open_account(services.ledger, other, 0)
    session_id = await purchase(http, customer, 300)
    session = checkout_session(session_id, account_id=customer.account_id, credits=300)
    session["metadata"].update(
        {"account_id": other, "credits": "1000000", "unit_amount": "0", "currency": "jpy"}
    )

    response = await deliver(http, event_body("checkout.session.completed", session))

    assert response.status_code == 200
    assert await topup_balance(services, customer.account_id) == 300
    assert await topup_balance(services, other) == 0
    assert await session_event_types(services, session_id) == [
        "CheckoutRequested",
        "CheckoutPaid",
    ]


async def paid_purchase(
    http: httpx.AsyncClient, customer: Customer, credits: int
) -> tuple[str, str]:
    session_id = await purchase(http, customer, credits)
    session = checkout_session(session_id, account_id=customer.account_id, credits=credits)
    assert (
        await deliver(http, event_body("checkout.session.completed", session))
    ).status_code == 200
    return session_id, str(session["payment_intent"])


async def refund(http: httpx.AsyncClient, payment_intent: str, amount: int, refunded: int) -> None:
    body = event_body(
        "charge.refunded", charge(payment_intent, amount=amount, amount_refunded=refunded)
    )
    assert (await deliver(http, body)).status_code == 200


async def test_refunds_claw_back_the_refunded_share_cumulatively(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    _, intent = await paid_purchase(http, customer, 1000)

    await refund(http, intent, 1000, 300)
    assert await topup_balance(services, customer.account_id) == 700
    await refund(http, intent, 1000, 300)  # the same cumulative figure again: nothing more
    await refund(http, intent, 1000, 500)  # cumulative: 200 more
    assert await topup_balance(services, customer.account_id) == 500
    await refund(http, intent, 1000, 1000)

    assert await topup_balance(services, customer.account_id) == 0
    types = await account_event_types(services, customer.account_id)
    assert types.count("CreditsClawedBack") == 3


async def test_a_dispute_reverses_the_rest_and_a_win_restores_it(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    _, intent = await paid_purchase(http, customer, 1000)
    await refund(http, intent, 1000, 200)

    opened = event_body(
        "charge.dispute.created", dispute("dp_1", intent, amount=800, status="needs_response")
    )
    assert (await deliver(http, opened)).status_code == 200
    assert (await deliver(http, opened)).status_code == 200  # redelivered
    assert await topup_balance(services, customer.account_id) == 0

    won = event_body("charge.dispute.closed", dispute("dp_1", intent, amount=800, status="won"))
    assert (await deliver(http, won)).status_code == 200

    assert await topup_balance(services, customer.account_id) == 800
    types = await account_event_types(services, customer.account_id)
    assert types.count("CreditsReversed") == 1
    assert types.count("CreditsRestored") == 1


async def test_a_lost_dispute_keeps_the_credits_reversed(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    _, intent = await paid_purchase(http, customer, 600)

    for status in ("needs_response", "lost"):
        kind = "created" if status == "needs_response" else "closed"
        body = event_body(
            f"charge.dispute.{kind}", dispute("dp_2", intent, amount=600, status=status)
        )
        assert (await deliver(http, body)).status_code == 200

    assert await topup_balance(services, customer.account_id) == 0


@pytest.mark.parametrize("reverse", [False, True], ids=["in order", "reversed"])
async def test_a_lost_dispute_appealed_and_won_gives_the_credits_back(
    http: httpx.AsyncClient, customer: Customer, services: Services, reverse: bool
) -> None:
    """Stripe's appeal of a lost dispute (API version 2026-10-28): a win reinstates the
    money, in whichever order its events come; the statuses of the appeal were ignored."""
    _, intent = await paid_purchase(http, customer, 600)
    life = [
        ("created", "needs_response"),
        ("funds_withdrawn", "needs_response"),
        ("closed", "lost"),
        ("updated", "appeal_needs_response"),
        ("updated", "appeal_under_review"),
        ("closed", "won"),
        ("funds_reinstated", "won"),
    ]
    bodies = [
        event_body(f"charge.dispute.{kind}", dispute("dp_3", intent, amount=600, status=status))
        for kind, status in life
    ]
    for body in reversed(bodies) if reverse else bodies:
        assert (await deliver(http, body)).status_code == 200

    assert await topup_balance(services, customer.account_id) == 600
    for body in bodies:  # redelivered
        assert (await deliver(http, body)).status_code == 200
    assert await topup_balance(services, customer.account_id) == 600


async def test_a_refund_of_a_payment_not_linked_yet_is_kept_and_credits_nothing(
    http: httpx.AsyncClient, services: Services
) -> None:
    start = await tail_position(services.store)

    await refund(http, "pi_test_someone_elses", 1000, 1000)

    # It may be ours, its payment still on its way: kept on the intent's stream, no account moved.
    assert [kind for kind, _ in await events_since(services.store, start)] == [
        "PaymentIntentRecorded",
        "RefundRecordedBeforePayment",
    ]


@pytest.mark.parametrize(
    "elsewhere",
    [{"livemode": True}, {"account": "acct_1ConnectedElsewhere"}],
    ids=["a live-mode event to a test-mode service", "a connected account's event"],
)
async def test_an_event_of_another_mode_or_account_credits_nothing(
    http: httpx.AsyncClient, customer: Customer, services: Services, elsewhere: dict[str, object]
) -> None:
    """A paid session the ledger never saw is credited from its metadata: a test-mode event
    on a live service (a test secret listed beside the live one) or a Connect endpoint's
    event credited an account with money nobody paid (a Stripe review)."""
    session_id = "cs_test_elsewhere_" + customer.account_id
    body = json.loads(
        event_body(
            "checkout.session.completed",
            checkout_session(session_id, account_id=customer.account_id, credits=700),
        )
    )
    body.update(elsewhere)

    response = await deliver(http, json.dumps(body))

    assert response.status_code == 200
    assert await topup_balance(services, customer.account_id) == 0
    assert await session_event_types(services, session_id) == []
