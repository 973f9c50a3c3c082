"""Webhook endpoints and low-balance thresholds over HTTP, and a notification end to end."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import stripe

from api.access.tokens import Scope
from api.services import Services
from ledger.notifications.dispatcher import Dispatcher
from projections.runner import Projector
from tests.e2e.conftest import Customer
from tests.support.webhook_receiver import Receiver, webhook_receiver


@pytest.fixture
async def endpoints(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> AsyncIterator[list[str]]:
    """Ids of the endpoints a test creates, disabled afterwards (the database is shared)."""
    created: list[str] = []
    yield created
    for endpoint_id in created:
        await http.delete(f"/v1/webhook-endpoints/{endpoint_id}", headers=writer_headers)


async def create_endpoint(
    http: httpx.AsyncClient, headers: dict[str, str], url: str, events: list[str], ids: list[str]
) -> dict[str, object]:
    response = await http.post(
        "/v1/webhook-endpoints", json={"url": url, "events": events}, headers=headers
    )
    assert response.status_code == 201, response.text
    ids.append(response.json()["id"])
    return response.json()  # type: ignore[no-any-return]


async def test_the_signing_secret_is_shown_once_and_endpoints_can_be_disabled(
    http: httpx.AsyncClient, writer_headers: dict[str, str], endpoints: list[str]
) -> None:
    created = await create_endpoint(
        http,
        writer_headers,
        "https://billing.internal.example/hooks",
        ["credits.low_balance", "credits.depleted"],
        endpoints,
    )

    assert str(created["id"]).startswith("we_")
    assert str(created["secret"]).startswith("whsec_")
    assert created["url"] == "https://billing.internal.example/hooks"
    assert created["events"] == ["credits.low_balance", "credits.depleted"]
    listed = (await http.get("/v1/webhook-endpoints", headers=writer_headers)).json()["data"]
    [mine] = [e for e in listed if e["id"] == created["id"]]
    assert "secret" not in mine
    assert created["secret"] not in str(listed)

    gone = await http.delete(f"/v1/webhook-endpoints/{created['id']}", headers=writer_headers)
    assert gone.status_code == 200
    assert gone.json()["disabled"] is not None
    listed = (await http.get("/v1/webhook-endpoints", headers=writer_headers)).json()["data"]
    assert created["id"] not in [e["id"] for e in listed]
    missing = await http.delete("/v1/webhook-endpoints/we_nope", headers=writer_headers)
    assert missing.status_code == 404


async def test_a_repeat_under_the_same_key_answers_the_endpoint_it_made(
    http: httpx.AsyncClient, writer_headers: dict[str, str], endpoints: list[str]
) -> None:
    """A retry after a lost answer made a second endpoint, and so every notification twice."""
    key = f"subscribe-{uuid.uuid4().hex}"
    headers = {**writer_headers, "Idempotency-Key": key}
    body = {"url": "https://billing.internal.example/once", "events": ["credits.spent"]}

    answers = await asyncio.gather(
        *(http.post("/v1/webhook-endpoints", json=body, headers=headers) for _ in range(4))
    )
    later = await http.post("/v1/webhook-endpoints", json=body, headers=headers)
    other = await http.post(
        "/v1/webhook-endpoints", json={**body, "url": "https://elsewhere.example/"}, headers=headers
    )

    assert [a.status_code for a in [*answers, later]] == [201] * 5
    endpoints.append(later.json()["id"])
    assert len({(a.json()["id"], a.json()["secret"]) for a in [*answers, later]}) == 1
    assert later.headers["Idempotent-Replayed"] == "true"
    assert sum("Idempotent-Replayed" not in a.headers for a in answers) == 1
    listed = (await http.get("/v1/webhook-endpoints?limit=100", headers=writer_headers)).json()
    assert [e["id"] for e in listed["data"] if e["url"] == body["url"]] == [later.json()["id"]]
    assert other.status_code == 422
    assert "Idempotency-Key" in other.json()["errors"]


async def test_the_same_key_from_another_token_is_not_given_the_endpoints_secret(
    http: httpx.AsyncClient,
    services: Services,
    writer_headers: dict[str, str],
    endpoints: list[str],
) -> None:
    """A repeat answers the endpoint's signing secret again, which is shown to its maker
    only: another service's token with the same key and body was given it (and could then
    sign notifications that endpoint's receiver takes for the ledger's)."""
    other_service = await services.tokens.issue(Scope.LEDGER_WRITE, name="another service")
    key = f"subscribe-{uuid.uuid4().hex}"
    body = {"url": "https://billing.internal.example/mine", "events": ["credits.spent"]}

    made = await http.post(
        "/v1/webhook-endpoints", json=body, headers={**writer_headers, "Idempotency-Key": key}
    )
    endpoints.append(made.json()["id"])
    again = await http.post(
        "/v1/webhook-endpoints", json=body, headers={**writer_headers, "Idempotency-Key": key}
    )
    other = await http.post(
        "/v1/webhook-endpoints",
        json=body,
        headers={"Authorization": f"Bearer {other_service.secret}", "Idempotency-Key": key},
    )

    assert (made.status_code, again.status_code) == (201, 201)
    assert again.json()["secret"] == made.json()["secret"]  # its maker's retry
    assert other.status_code == 422, other.text
    assert made.json()["secret"] not in other.text
    assert "Idempotency-Key" in other.json()["errors"]


async def test_endpoints_are_listed_a_page_at_a_time(
    http: httpx.AsyncClient, writer_headers: dict[str, str], endpoints: list[str]
) -> None:
    for n in range(3):
        await create_endpoint(
            http, writer_headers, f"https://hooks.example.com/{n}", ["credits.spent"], endpoints
        )
    pages = []
    params: dict[str, int] = {"limit": 1}
    while True:  # from the first endpoint of the shared database to the last
        answer = await http.get("/v1/webhook-endpoints", params=params, headers=writer_headers)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        if not answer.json()["has_more"]:
            break
        params = {"limit": 1, "after": answer.json()["next_after"]}
    listed = [e["id"] for p in pages for e in p["data"]]
    too_many = await http.get(
        "/v1/webhook-endpoints", params={"limit": 1001}, headers=writer_headers
    )
    wrong_cursor = await http.get(
        "/v1/webhook-endpoints", params={"after": "x"}, headers=writer_headers
    )

    assert {len(p["data"]) for p in pages} == {1}
    assert len(listed) == len(set(listed))
    assert [e for e in listed if e in endpoints] == endpoints
    assert pages[-1]["next_after"] is None
    assert too_many.status_code == 422
    assert too_many.json()["errors"] == {"limit": ["The limit must be between 1 and 1000."]}
    assert wrong_cursor.status_code == 422
    assert list(wrong_cursor.json()["errors"]) == ["after"]


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"events": ["credits.spent"]}, {"url": ["The url field is required."]}),
        (
            {"url": "ftp://example.com/x", "events": ["credits.spent"]},
            {"url": ["The url field must be a valid URL (http or https)."]},
        ),
        (
            {"url": "http://", "events": ["credits.spent"]},
            {"url": ["The url field must be a valid URL (http or https)."]},
        ),
        (
            {"url": "https://example.com", "events": []},
            {"events": ["The events field is required."]},
        ),
        ({"url": "https://example.com"}, {"events": ["The events field is required."]}),
        (
            {"url": "https://example.com", "events": "credits.spent"},
            {"events": ["The events field must be an array."]},
        ),
        (
            {"url": "https://example.com", "events": ["credits.spent", "credits.stolen", 7]},
            {
                "events.1": [
                    "The selected events.1 is invalid. Choose from credits.purchased, "
                    "credits.spent, credits.low_balance, credits.depleted, hold.expired, "
                    "credits.granted, grant.expired."
                ],
                "events.2": [
                    "The selected events.2 is invalid. Choose from credits.purchased, "
                    "credits.spent, credits.low_balance, credits.depleted, hold.expired, "
                    "credits.granted, grant.expired."
                ],
            },
        ),
    ],
)
async def test_invalid_endpoints_are_422_in_the_contract_shape(
    http: httpx.AsyncClient,
    writer_headers: dict[str, str],
    body: dict[str, object],
    errors: dict[str, list[str]],
) -> None:
    response = await http.post("/v1/webhook-endpoints", json=body, headers=writer_headers)

    assert response.status_code == 422
    assert response.json()["errors"] == errors
    assert response.json()["message"].startswith(next(iter(errors.values()))[0])


async def test_only_internal_services_manage_endpoints(
    http: httpx.AsyncClient, customer: Customer
) -> None:
    body = {"url": "https://example.com", "events": ["credits.spent"]}
    assert (await http.post("/v1/webhook-endpoints", json=body)).status_code == 401
    refused = await http.post("/v1/webhook-endpoints", json=body, headers=customer.headers)
    assert refused.status_code == 403
    assert (await http.get("/v1/webhook-endpoints", headers=customer.headers)).status_code == 403
    threshold = await http.put(
        f"/v1/accounts/{customer.account_id}/low-balance-threshold",
        json={"threshold": 1},
        headers=customer.headers,
    )
    assert threshold.status_code == 403


async def test_the_low_balance_threshold_is_set_per_account(
    http: httpx.AsyncClient, writer_headers: dict[str, str], customer: Customer
) -> None:
    path = f"/v1/accounts/{customer.account_id}/low-balance-threshold"

    own = await http.put(path, json={"threshold": 250}, headers=writer_headers)
    default = await http.put(path, json={"threshold": None}, headers=writer_headers)
    negative = await http.put(path, json={"threshold": -1}, headers=writer_headers)
    absent = await http.put(path, json={}, headers=writer_headers)
    text = await http.put(path, json={"threshold": "10"}, headers=writer_headers)
    unknown = await http.put(
        "/v1/accounts/acct_nobody_here/low-balance-threshold",
        json={"threshold": 1},
        headers=writer_headers,
    )

    assert own.status_code == 200, own.text
    assert own.json() == {
        "account_id": customer.account_id,
        "threshold": 250,
        "effective_threshold": 250,
    }
    assert default.json() == {
        "account_id": customer.account_id,
        "threshold": None,
        "effective_threshold": 100,  # 10 % of the 1,000 allowance
    }
    assert negative.status_code == 422
    assert negative.json()["errors"] == {"threshold": ["The threshold must be at least 0."]}
    assert absent.json()["errors"] == {"threshold": ["The threshold field must be present."]}
    assert text.json()["errors"] == {"threshold": ["The threshold field must be an integer."]}
    assert unknown.status_code == 404


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with webhook_receiver() as running:
        yield running


async def test_a_spend_over_the_api_reaches_a_subscriber_signed(
    http: httpx.AsyncClient,
    writer_headers: dict[str, str],
    customer: Customer,
    services: Services,
    receiver: Receiver,
    endpoints: list[str],
) -> None:
    endpoint = await create_endpoint(
        http,
        writer_headers,
        receiver.url("e2e"),
        ["credits.spent", "credits.low_balance"],
        endpoints,
    )
    await http.put(
        f"/v1/accounts/{customer.account_id}/low-balance-threshold",
        json={"threshold": 500},
        headers=writer_headers,
    )
    stop = asyncio.Event()
    running = [
        asyncio.create_task(Projector(services.store, services.database_url).run(stop)),
        asyncio.create_task(
            Dispatcher(services.pool, services.database_url, allow_private=True).run(stop)
        ),
    ]
    try:
        spent = await http.post(
            f"/v1/accounts/{customer.account_id}/spend",
            json={"amount": 600, "reason": "e2e"},
            headers={**writer_headers, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert spent.status_code == 200, spent.text
        got = await receiver.wait_for("e2e", 2, seconds=30)
    finally:
        stop.set()
        await asyncio.gather(*running)

    notifications = []
    for received in got:
        assert received.signature is not None
        stripe.WebhookSignature.verify_header(received.body, received.signature, endpoint["secret"])
        notifications.append(received.json)
    mine = [n for n in notifications if n["data"]["account_id"] == customer.account_id]
    assert [(n["type"], n["data"]["available"]) for n in mine] == [
        ("credits.spent", 400),
        ("credits.low_balance", 400),
    ]
    assert mine[0]["data"]["reason"] == "e2e"
