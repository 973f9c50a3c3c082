"""A JSON body with a string that is not UTF-8 is 422, on the express lane and off it.

msgspec raises UnicodeDecodeError for such a string, not a DecodeError: both roads
answered it with a 500.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from ledger_client import LedgerClient

from api.services import Services
from ledger.domain.ids import account_stream_id
from tests.e2e.conftest import Customer
from tests.e2e.test_spending_api import open_account

NOT_JSON = {
    "message": "The request body must be valid JSON.",
    "errors": {"body": ["The request body must be valid JSON."]},
}


@pytest.mark.parametrize("route", ["spend", "holds", "grants"])
@pytest.mark.parametrize("text", [b"\xff", b"\xed\xa0\x80"])  # not UTF-8; a lone surrogate
async def test_a_string_that_is_not_utf8_is_refused_and_records_nothing(
    http: httpx.AsyncClient,
    writer: LedgerClient,
    writer_headers: dict[str, str],
    services: Services,
    route: str,
    text: bytes,
) -> None:
    account_id = await open_account(writer, 100)

    answer = await http.post(
        f"/v1/accounts/{account_id}/{route}",
        content=b'{"amount": 1, "reason": "' + text + b'"}',
        headers={
            **writer_headers,
            "Idempotency-Key": uuid.uuid4().hex,
            "Content-Type": "application/json",
        },
    )

    assert answer.status_code == 422
    assert answer.json() == NOT_JSON
    assert len(await services.store.load(account_stream_id(account_id))) == 1  # opened


async def test_a_route_off_the_express_lane_refuses_it_too(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    answer = await http.post(
        "/v1/accounts",
        content=b'{"account_id": "\xff"}',
        headers={**writer_headers, "Content-Type": "application/json"},
    )

    assert answer.status_code == 422
    assert answer.json() == NOT_JSON


@pytest.mark.parametrize("route", ["spend", "holds", "grants"])
@pytest.mark.parametrize(
    "body",
    [
        b'{"amount": 1, "note": "caf\xe9"}',  # Latin-1, in a field the request does not have
        b'{"amount": 1, "\xff": 1}',  # in a field's name
    ],
)
async def test_bytes_that_are_not_utf8_anywhere_in_the_body_are_refused_and_record_nothing(
    http: httpx.AsyncClient,
    writer: LedgerClient,
    writer_headers: dict[str, str],
    services: Services,
    route: str,
    body: bytes,
) -> None:
    """msgspec checks only the strings it keeps: these bodies were taken, and recorded."""
    account_id = await open_account(writer, 100)

    answer = await http.post(
        f"/v1/accounts/{account_id}/{route}",
        content=body,
        headers={
            **writer_headers,
            "Idempotency-Key": uuid.uuid4().hex,
            "Content-Type": "application/json",
        },
    )

    assert answer.status_code == 422
    assert answer.json() == NOT_JSON
    assert len(await services.store.load(account_stream_id(account_id))) == 1  # opened


async def test_a_purchase_with_bytes_that_are_not_utf8_is_refused(
    http: httpx.AsyncClient, customer: Customer
) -> None:
    answer = await http.post(
        "/v1/credits/purchase",
        content=b'{"credits": 100, "note": "caf\xe9"}',
        headers={**customer.headers, "Content-Type": "application/json"},
    )

    assert answer.status_code == 422
    assert answer.json() == NOT_JSON
    purchases = await http.get("/v1/credits/purchases", headers=customer.headers)
    assert purchases.json()["data"] == []
