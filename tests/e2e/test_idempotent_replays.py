"""``Idempotent-Replayed: true`` on an answer given again, never on a first one (as Stripe's)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from api.edge import IDEMPOTENT_REPLAYED
from tests.e2e.conftest import Customer
from tests.support.raw_http import open_account, spend
from tests.support.stripe_events import event_body, signature

# Raw HTTP, not the Python client: these tests read the answers' headers.


async def place(
    http: httpx.AsyncClient, headers: dict[str, str], account_id: str, amount: int, key: str
) -> httpx.Response:
    return await http.post(
        f"/v1/accounts/{account_id}/holds",
        json={"amount": amount, "reason": "render job"},
        headers={**headers, "Idempotency-Key": key},
    )


def replayed(response: httpx.Response) -> str | None:
    return response.headers.get(IDEMPOTENT_REPLAYED)


async def test_a_repeated_spend_is_marked_replayed_and_the_first_is_not(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    account_id = await open_account(http, writer_headers, 1000)

    first = await spend(http, writer_headers, account_id, 30, key="spend-once")
    again = await spend(http, writer_headers, account_id, 30, key="spend-once")
    other_body = await spend(http, writer_headers, account_id, 31, key="spend-once")
    next_one = await spend(http, writer_headers, account_id, 5)

    assert (first.status_code, again.status_code) == (200, 200), (first.text, again.text)
    assert again.json() == first.json()
    assert replayed(first) is None
    assert replayed(again) == "true"
    # Not a replay: a refusal (422) of a key reused for another request.
    assert other_body.status_code == 422, other_body.text
    assert replayed(other_body) is None
    # The next request on the same connection starts unmarked.
    assert next_one.status_code == 200, next_one.text
    assert replayed(next_one) is None
    assert next_one.json()["balance"] == 1000 - 30 - 5


async def test_a_repeated_spend_replays_its_answer_even_when_the_balance_is_now_short(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    account_id = await open_account(http, writer_headers, 100)
    first = await spend(http, writer_headers, account_id, 80, key="before-the-drain")
    drained = await spend(http, writer_headers, account_id, 20)

    again = await spend(http, writer_headers, account_id, 80, key="before-the-drain")

    assert (first.status_code, drained.status_code, again.status_code) == (200, 200, 200)
    assert again.json() == first.json()
    assert replayed(again) == "true"
    assert replayed(drained) is None


async def test_of_two_concurrent_identical_spends_one_is_decided_and_one_replayed(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    account_id = await open_account(http, writer_headers, 1000)

    answers = await asyncio.gather(
        *(spend(http, writer_headers, account_id, 40, key="raced") for _ in range(2))
    )

    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json()
    assert sorted(str(replayed(a)) for a in answers) == ["None", "true"]


async def test_a_repeated_hold_and_a_repeated_capture_are_marked_replayed(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    account_id = await open_account(http, writer_headers, 1000)

    first = await place(http, writer_headers, account_id, 300, key="hold-once")
    again = await place(http, writer_headers, account_id, 300, key="hold-once")

    assert (first.status_code, again.status_code) == (201, 201), (first.text, again.text)
    assert again.json() == first.json()
    assert (replayed(first), replayed(again)) == (None, "true")

    capture = f"/v1/accounts/{account_id}/holds/{first.json()['hold_id']}/capture"
    captured = await http.post(capture, json={"amount": 250}, headers=writer_headers)
    captured_again = await http.post(capture, json={"amount": 250}, headers=writer_headers)

    assert (captured.status_code, captured_again.status_code) == (200, 200)
    assert captured_again.json() == captured.json()
    assert (replayed(captured), replayed(captured_again)) == (None, "true")


async def test_a_repeated_grant_and_a_repeated_purchase_are_marked_replayed(
    http: httpx.AsyncClient, writer_headers: dict[str, str], customer: Customer
) -> None:
    grants = f"/v1/accounts/{customer.account_id}/grants"
    keyed = {**writer_headers, "Idempotency-Key": f"grant-{uuid.uuid4().hex}"}
    grant = await http.post(grants, json={"amount": 50, "reason": "welcome"}, headers=keyed)
    grant_again = await http.post(grants, json={"amount": 50, "reason": "welcome"}, headers=keyed)

    assert (grant.status_code, grant_again.status_code) == (201, 201), grant.text
    assert (replayed(grant), replayed(grant_again)) == (None, "true")

    bought = {**customer.headers, "Idempotency-Key": f"buy-{uuid.uuid4().hex}"}
    purchase = await http.post("/v1/credits/purchase", json={"credits": 500}, headers=bought)
    purchase_again = await http.post("/v1/credits/purchase", json={"credits": 500}, headers=bought)

    assert (purchase.status_code, purchase_again.status_code) == (200, 200), purchase.text
    assert purchase_again.json() == purchase.json()
    assert (replayed(purchase), replayed(purchase_again)) == (None, "true")


async def test_a_stripe_event_delivered_again_is_marked_replayed(
    http: httpx.AsyncClient,
) -> None:
    body = event_body("customer.created", {"id": f"cus_{uuid.uuid4().hex[:12]}"})

    deliveries = [
        await http.post(
            "/v1/stripe/webhook", content=body, headers={"Stripe-Signature": signature(body)}
        )
        for _ in range(2)
    ]

    assert [d.status_code for d in deliveries] == [200, 200]
    assert [replayed(d) for d in deliveries] == [None, "true"]


async def test_a_spend_and_a_hold_refused_402_are_decided_anew_after_a_top_up(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    """A 402 records nothing, its key neither: the same request after a grant is decided
    now (not a replay of the 402), and only then is its answer kept."""
    account_id = await open_account(http, writer_headers, 100)
    short = [
        await spend(http, writer_headers, account_id, 150, key="after-top-up"),
        await place(http, writer_headers, account_id, 150, key="hold-after-top-up"),
    ]
    granted = await http.post(
        f"/v1/accounts/{account_id}/grants",
        json={"amount": 400},
        headers={**writer_headers, "Idempotency-Key": f"top-up-{uuid.uuid4().hex}"},
    )
    spent = await spend(http, writer_headers, account_id, 150, key="after-top-up")
    held = await place(http, writer_headers, account_id, 150, key="hold-after-top-up")
    again = await spend(http, writer_headers, account_id, 150, key="after-top-up")

    assert [r.status_code for r in short] == [402, 402]
    assert granted.status_code == 201, granted.text
    assert (spent.status_code, held.status_code) == (200, 201), (spent.text, held.text)
    assert (replayed(spent), replayed(held)) == (None, None)
    assert spent.json()["balance"] == 500 - 150
    assert (again.content, replayed(again)) == (spent.content, "true")


async def test_a_grant_is_replayed_after_its_expiry_has_passed(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    """Sent again once its expires_at is past, a grant is not refused as expiring in the past
    (422): its key answers what it answered."""
    account_id = await open_account(http, writer_headers, 100)
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    keyed = {**writer_headers, "Idempotency-Key": "short-lived"}
    body = {"amount": 50, "expires_at": soon}
    first = await http.post(f"/v1/accounts/{account_id}/grants", json=body, headers=keyed)
    await asyncio.sleep(1.2)
    again = await http.post(f"/v1/accounts/{account_id}/grants", json=body, headers=keyed)

    assert first.status_code == 201, first.text
    assert (again.status_code, again.content, replayed(again)) == (201, first.content, "true")


async def test_a_repeated_void_and_a_repeated_reset_answer_their_first_answer(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    """With an ``Idempotency-Key``, a void or a reset sent again (its answer lost) gets its
    first answer: a void's retry was 409 (the grant voided by the first), a reset's the
    balances as they are now, not what the reset left."""
    account_id = await open_account(http, writer_headers, 100)
    granted = await http.post(
        f"/v1/accounts/{account_id}/grants",
        json={"amount": 50},
        headers={**writer_headers, "Idempotency-Key": f"grant-{uuid.uuid4().hex}"},
    )
    void = f"/v1/accounts/{account_id}/grants/{granted.json()['grant_id']}/void"
    keyed = {**writer_headers, "Idempotency-Key": "void-once"}
    voided = await http.post(void, json={"reason": "ended"}, headers=keyed)
    voided_again = await http.post(void, json={"reason": "ended"}, headers=keyed)
    other_reason = await http.post(void, json={"reason": "other"}, headers=keyed)

    assert (voided.status_code, voided_again.status_code) == (200, 200), voided_again.text
    assert voided_again.content == voided.content
    assert (replayed(voided), replayed(voided_again)) == (None, "true")
    assert other_reason.status_code == 422, other_reason.text

    reset = f"/v1/accounts/{account_id}/monthly-reset"
    keyed = {**writer_headers, "Idempotency-Key": "reset-once"}
    first = await http.post(reset, json={"period": "2999-01"}, headers=keyed)
    spent = await spend(http, writer_headers, account_id, 10)
    again = await http.post(reset, json={"period": "2999-01"}, headers=keyed)
    other_period = await http.post(reset, json={"period": "2999-02"}, headers=keyed)
    unkeyed = await http.post(reset, json={"period": "2999-01"}, headers=writer_headers)

    assert (first.status_code, spent.status_code, again.status_code) == (200, 200, 200)
    assert first.json()["allowance_remaining"] == 100
    assert (again.content, replayed(first), replayed(again)) == (first.content, None, "true")
    assert other_period.status_code == 422, other_period.text
    # Without a key, the same period again changes nothing and answers the balances now.
    assert (unkeyed.status_code, unkeyed.json()["allowance_remaining"]) == (200, 90)
    assert replayed(unkeyed) is None
