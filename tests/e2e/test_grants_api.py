"""The contract's Grants section over HTTP."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.services import Services
from projections.runner import Projector
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


async def test_an_account_s_grants_are_listed_by_status_with_what_remains_at_once(
    http: httpx.AsyncClient,
    writer_headers: dict[str, str],
    auditor_headers: dict[str, str],
    services: Services,
) -> None:
    stop = asyncio.Event()
    projector = asyncio.create_task(Projector(services.store, services.database_url).run(stop))
    try:
        await list_grants_while_projecting(http, writer_headers, auditor_headers)
    finally:
        stop.set()
        await projector


async def list_grants_while_projecting(
    http: httpx.AsyncClient, writer_headers: dict[str, str], auditor_headers: dict[str, str]
) -> None:
    account_id = await open_account(http, writer_headers, 0)
    first = (await grant(http, writer_headers, account_id, {"amount": 100, "priority": 1})).json()
    second = (await grant(http, writer_headers, account_id, {"amount": 40})).json()
    await http.post(
        f"/v1/accounts/{account_id}/spend",
        json={"amount": 30, "reason": "job"},
        headers={**writer_headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    await http.post(
        f"/v1/accounts/{account_id}/grants/{second['grant_id']}/void", headers=writer_headers
    )
    base = f"/v1/accounts/{account_id}/grants"

    # No waiting for the projector: a caller reads its own grants, spends and voids.
    everything = await http.get(base, headers=writer_headers)
    active = await http.get(f"{base}?status=active", headers=auditor_headers)
    voided = await http.get(f"{base}?status=voided&limit=1", headers=writer_headers)
    page = await http.get(f"{base}?limit=1", headers=writer_headers)
    credits = await http.get(f"/v1/accounts/{account_id}/credits", headers=writer_headers)

    assert everything.status_code == 200, everything.text
    shown = [(g["grant_id"], g["status"], g["remaining"]) for g in everything.json()["data"]]
    assert shown == [(second["grant_id"], "voided", 0), (first["grant_id"], "active", 70)]
    assert [g["grant_id"] for g in active.json()["data"]] == [first["grant_id"]]
    assert [g["grant_id"] for g in voided.json()["data"]] == [second["grant_id"]]
    assert voided.json()["has_more"] is False
    assert page.json()["has_more"] is True
    after = page.json()["next_after"]
    rest = await http.get(f"{base}?limit=1&after={after}", headers=writer_headers)
    assert [g["grant_id"] for g in rest.json()["data"]] == [first["grant_id"]]
    assert (credits.json()["granted"], credits.json()["balance"]) == (70, 70)


async def test_listing_grants_refuses_an_unknown_status_and_account(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    account_id = await open_account(http, writer_headers, 0)

    bad = await http.get(
        f"/v1/accounts/{account_id}/grants?status=spent&limit=0", headers=writer_headers
    )
    unknown = await http.get("/v1/accounts/acct_nobody_here/grants", headers=writer_headers)

    assert bad.status_code == 422
    assert bad.json()["errors"] == {
        "status": ["The selected status is invalid. Choose from active, expired, voided, all."],
        "limit": ["The limit must be between 1 and 1000."],
    }
    assert unknown.status_code == 404
