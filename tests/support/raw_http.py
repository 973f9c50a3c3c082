"""Commands over raw HTTP, for the tests that read an answer's headers (the Python
client returns bodies only)."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import unique


async def open_account(http: httpx.AsyncClient, headers: dict[str, str], allowance: int) -> str:
    account_id = unique("acct")
    body = {"account_id": account_id, "monthly_allowance": allowance}
    response = await http.post("/v1/accounts", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return account_id


async def spend(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    account_id: str,
    amount: int,
    key: str | None = None,
) -> httpx.Response:
    return await http.post(
        f"/v1/accounts/{account_id}/spend",
        json={"amount": amount, "reason": "api call"},
        headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex},
    )
