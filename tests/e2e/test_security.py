"""Who may do what, and that secrets stay out of logs and error bodies."""

from __future__ import annotations

import logging
import uuid

import httpx
import pytest

from api.access.tokens import Scope
from api.services import Services
from ledger.commands import PlaceHold
from tests.e2e.conftest import Customer
from tests.support.events import events_since, tail_position
from tests.support.ledger import open_account
from tests.support.stripe_events import WEBHOOK_SECRET, checkout_session, event_body, signature

# (method, path template, body, scopes allowed; "own" = a credits token on its own account)
ENDPOINTS = [
    ("POST", "/v1/credits/purchase", {"credits": 100}, {"credits"}),
    ("GET", "/v1/credits", None, {"credits"}),
    ("GET", "/v1/credits/purchases", None, {"credits"}),
    ("GET", "/v1/credits/transactions", None, {"credits"}),
    ("POST", "/v1/accounts", {"account_id": "acct_{new}"}, {"ledger:write"}),
    ("POST", "/v1/accounts/{account}/spend", {"amount": 1}, {"ledger:write"}),
    ("POST", "/v1/accounts/{account}/monthly-reset", {}, {"ledger:write"}),
    ("PATCH", "/v1/accounts/{account}", {"monthly_allowance": 5}, {"ledger:write"}),
    ("GET", "/v1/accounts/{account}/credits", None, {"ledger:write", "ledger:audit", "own"}),
    ("GET", "/v1/accounts/{account}/events", None, {"ledger:audit", "own"}),
    ("GET", "/v1/events", None, {"ledger:audit"}),
    ("POST", "/v1/accounts/{account}/holds", {"amount": 1}, {"ledger:write"}),
    ("POST", "/v1/accounts/{account}/holds/{hold}/capture", {"amount": 1}, {"ledger:write"}),
    ("POST", "/v1/accounts/{account}/holds/{hold}/release", {}, {"ledger:write"}),
    ("GET", "/v1/accounts/{account}/holds/{hold}", None, {"ledger:write", "ledger:audit"}),
    (
        "POST",
        "/v1/webhook-endpoints",
        {"url": "https://hooks.example/ledger", "events": ["credits.spent"]},
        {"ledger:write"},
    ),
    ("GET", "/v1/webhook-endpoints", None, {"ledger:write"}),
    ("DELETE", "/v1/webhook-endpoints/{endpoint}", None, {"ledger:write"}),
    ("PUT", "/v1/accounts/{account}/low-balance-threshold", {"threshold": 5}, {"ledger:write"}),
]


@pytest.fixture
async def tokens(services: Services, customer: Customer) -> dict[str, str]:
    writer = await services.tokens.issue(Scope.LEDGER_WRITE, name="matrix")
    auditor = await services.tokens.issue(Scope.LEDGER_AUDIT, name="matrix")
    other_id = f"{customer.account_id}_other"
    await open_account(services.ledger, other_id, 100)
    other = await services.tokens.issue(Scope.CREDITS, account_id=other_id)
    return {
        "credits": customer.token,
        "ledger:write": writer.secret,
        "ledger:audit": auditor.secret,
        "other-customer": other.secret,
    }


@pytest.fixture
async def existing(
    http: httpx.AsyncClient, services: Services, customer: Customer, tokens: dict[str, str]
) -> dict[str, str]:
    """A hold on the customer's account and a webhook endpoint, for the paths that name them."""
    hold = await services.ledger.execute(
        PlaceHold(
            account_id=customer.account_id,
            amount=10,
            expires_in_seconds=600,
            reason="matrix",
            idempotency_key="m-1",
        )
    )
    created = await http.post(
        "/v1/webhook-endpoints",
        json={"url": "https://hooks.example/matrix", "events": ["credits.spent"]},
        headers={"Authorization": f"Bearer {tokens['ledger:write']}"},
    )
    assert created.status_code == 201, created.text
    return {"account": customer.account_id, "hold": hold.hold_id, "endpoint": created.json()["id"]}


async def test_every_scope_is_refused_everywhere_it_does_not_belong(
    http: httpx.AsyncClient, tokens: dict[str, str], existing: dict[str, str]
) -> None:
    tried = 0
    for method, template, body, allowed in ENDPOINTS:
        for holder, token in tokens.items():
            new = uuid.uuid4().hex[:10]
            path = template.format(**existing)
            payload = (
                {k: v.format(new=new) if isinstance(v, str) else v for k, v in body.items()}
                if body is not None
                else None
            )
            scope = "credits" if holder == "other-customer" else holder
            may = scope in allowed or (
                holder == "credits" and "own" in allowed and "{account}" in template
            )
            if holder == "other-customer" and "{account}" in template:
                may = False  # another customer's account: never
            response = await http.request(
                method,
                path,
                json=payload,
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
            )
            tried += 1
            if may:
                assert response.status_code < 400 or response.status_code in (402, 409, 502), (
                    method,
                    path,
                    holder,
                    response.status_code,
                    response.text,
                )
            else:
                assert response.status_code == 403, (method, path, holder, response.text)
            without = await http.request(method, path, json=payload)
            assert without.status_code == 401, (method, path)
    assert tried == len(ENDPOINTS) * len(tokens)


async def test_tokens_keys_and_secrets_never_reach_logs_or_error_bodies(
    http: httpx.AsyncClient,
    customer: Customer,
    tokens: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []
    for token in tokens.values():
        for path in ("/v1/credits", "/v1/events", "/v1/nothing"):
            bodies.append((await http.get(path, headers={"Authorization": f"Bearer {token}"})).text)
        bodies.append(
            (
                await http.post(
                    "/v1/credits/purchase",
                    content=b"{not json",
                    headers={"Authorization": f"Bearer {token}"},
                )
            ).text
        )
        bodies.append(
            (await http.get("/v1/credits", headers={"Authorization": f"Bearer {token}x"})).text
        )
    purchase = await http.post(
        "/v1/credits/purchase", json={"credits": 100}, headers=customer.headers
    )
    event = event_body(
        "checkout.session.completed",
        checkout_session(
            purchase.json()["session_id"], account_id=customer.account_id, credits=100
        ),
    )
    bodies.append(
        (
            await http.post(
                "/v1/stripe/webhook", content=event, headers={"Stripe-Signature": "t=1,v1=00"}
            )
        ).text
    )
    bodies.append(
        (
            await http.post(
                "/v1/stripe/webhook", content=event, headers={"Stripe-Signature": signature(event)}
            )
        ).text
    )

    secrets = [*tokens.values(), WEBHOOK_SECRET, "sk_test_ledger_suite"]
    everything = caplog.text + "\n".join(bodies)
    for secret in secrets:
        assert secret not in everything
    for token in tokens.values():
        assert token.split("_", 2)[2] not in everything  # not even a token's random part


async def test_oversized_bodies_are_413_and_never_recorded(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    huge = b'{"credits": 100, "padding": "' + b"x" * 400_000 + b'"}'
    start = await tail_position(services.store)

    purchase = await http.post(
        "/v1/credits/purchase",
        content=huge,
        headers={**customer.headers, "Content-Type": "application/json"},
    )
    webhook = await http.post(
        "/v1/stripe/webhook", content=huge, headers={"Stripe-Signature": "t=1,v1=00"}
    )

    assert purchase.status_code == webhook.status_code == 413
    assert purchase.json() == {"message": "The request body is too large."}
    assert await events_since(services.store, start) == []


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "tab\there"])
async def test_bad_idempotency_keys_are_422(
    http: httpx.AsyncClient, customer: Customer, key: str
) -> None:
    response = await http.post(
        "/v1/credits/purchase",
        json={"credits": 100},
        headers={**customer.headers, "Idempotency-Key": key.encode("utf-8")},
    )

    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["errors"]
