"""A reason with a NUL character is refused with a 422, and nothing is recorded.

PostgreSQL's text cannot hold a NUL: recorded in an event (whose state is bytes), such a
reason stopped every view at the projector's next write of it.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from ledger_client import LedgerClient

from api.services import Services
from ledger.domain.ids import account_stream_id
from tests.e2e.test_spending_api import open_account

REFUSED = {
    "message": "The reason must not contain a NUL character.",
    "errors": {"reason": ["The reason must not contain a NUL character."]},
}


async def post(
    http: httpx.AsyncClient, headers: dict[str, str], path: str, body: dict[str, Any]
) -> httpx.Response:
    return await http.post(
        path, json=body, headers={**headers, "Idempotency-Key": uuid.uuid4().hex}
    )


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("spend", {"amount": 10, "reason": "a\x00b"}),
        ("holds", {"amount": 10, "reason": "\x00"}),
        ("grants", {"amount": 10, "reason": "promo\x00"}),
    ],
)
async def test_a_nul_in_a_reason_is_refused_and_records_nothing(
    http: httpx.AsyncClient,
    writer: LedgerClient,
    writer_headers: dict[str, str],
    services: Services,
    route: str,
    body: dict[str, Any],
) -> None:
    account_id = await open_account(writer, 100)
    stream = account_stream_id(account_id)

    answer = await post(http, writer_headers, f"/v1/accounts/{account_id}/{route}", body)

    assert answer.status_code == 422
    assert answer.json() == REFUSED
    assert [e.topic.rsplit(":", 1)[-1] for e in await services.store.load(stream)] == [
        "AccountOpened"
    ]


async def test_a_grant_is_not_voided_with_a_nul_in_its_reason(
    http: httpx.AsyncClient,
    writer: LedgerClient,
    writer_headers: dict[str, str],
    services: Services,
) -> None:
    account_id = await open_account(writer, 0)
    given = await writer.grant(account_id, 50)

    answer = await post(
        http,
        writer_headers,
        f"/v1/accounts/{account_id}/grants/{given.grant_id}/void",
        {"reason": "no\x00"},
    )

    assert answer.status_code == 422
    assert answer.json() == REFUSED
    assert (await writer.get_credits(account_id)).balance == 50
    assert len(await services.store.load(account_stream_id(account_id))) == 2  # opened, granted
