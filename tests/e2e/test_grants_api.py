"""The contract's Grants section over HTTP."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.test_spending_api import open_account


async def grant(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    account_id: str,
    body: dict[str, Any],
    key: str | None = None,
) -> httpx.Response:
    return await http.post(
        f"/v1/accounts/{account_id}/grants",
        json=body,
        headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex},
    )


async def test_a_grant_is_spent_after_the_allowance_and_before_top_ups(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    account_id = await open_account(http, writer_headers, 100)
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()

    given = await grant(
        http,
        writer_headers,
        account_id,
        {"amount": 500, "expires_at": expires, "priority": 10, "reason": "welcome"},
    )
    spent = await http.post(
        f"/v1/accounts/{account_id}/spend",
        json={"amount": 250, "reason": "job"},
        headers={**writer_headers, "Idempotency-Key": uuid.uuid4().hex},
    )

    assert given.status_code == 201, given.text
    body = given.json()
    assert body["grant_id"].startswith("grant_")
    assert (body["amount"], body["remaining"], body["priority"]) == (500, 500, 10)
    assert datetime.fromisoformat(body["expires_at"]) == datetime.fromisoformat(expires)
    assert spent.status_code == 200, spent.text
    assert (spent.json()["from_allowance"], spent.json()["from_topup"]) == (100, 0)
    assert spent.json()["balance"] == 350


async def test_the_same_key_gives_the_same_grant_once(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    account_id = await open_account(http, writer_headers, 0)

    first = await grant(http, writer_headers, account_id, {"amount": 50}, key="promo-1")
    again = await grant(http, writer_headers, account_id, {"amount": 50}, key="promo-1")
    other = await grant(http, writer_headers, account_id, {"amount": 60}, key="promo-1")

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert other.status_code == 422


async def test_voiding_lapses_what_remains_and_a_second_void_is_409(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    account_id = await open_account(http, writer_headers, 0)
    grant_id = (await grant(http, writer_headers, account_id, {"amount": 80})).json()["grant_id"]
    base = f"/v1/accounts/{account_id}/grants"

    voided = await http.post(
        f"{base}/{grant_id}/void", json={"reason": "withdrawn"}, headers=writer_headers
    )
    again = await http.post(f"{base}/{grant_id}/void", json={}, headers=writer_headers)
    unknown = await http.post(f"{base}/grant_nope/void", headers=writer_headers)

    assert voided.status_code == 200, voided.text
    assert (voided.json()["lapsed"], voided.json()["balance"]) == (80, 0)
    assert again.status_code == 409
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"amount": 0}, "amount", "The amount must be at least 1."),
        ({"amount": 1_000_000_001}, "amount", "The amount must not be greater than 1000000000."),
        ({}, "amount", "The amount field is required."),
        ({"amount": 5, "priority": 101}, "priority", "The priority must not be greater than 100."),
        (
            {"amount": 5, "expires_at": "tomorrow"},
            "expires_at",
            "The expires at must be an RFC 3339 time with an offset.",
        ),
        (
            {"amount": 5, "expires_at": "2020-01-01T00:00:00Z"},
            "expires_at",
            "A grant's expires_at must be in the future.",
        ),
    ],
)
async def test_bad_grants_are_422(
    http: httpx.AsyncClient,
    writer_headers: dict[str, str],
    body: dict[str, Any],
    field: str,
    message: str,
) -> None:
    account_id = await open_account(http, writer_headers, 0)

    refused = await grant(http, writer_headers, account_id, body)

    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"] == {field: [message]}
