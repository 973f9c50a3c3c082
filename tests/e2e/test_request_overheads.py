"""Work a request would repeat that the API does once, or more cheaply, with the same answers
(api/app.py, api/express.py, api/access/guards.py; bench.spend_instructions counts them)."""

from __future__ import annotations

import httpx
import pytest
from litestar.datastructures.state import ImmutableState

from api.services import Services
from tests.conftest import unique
from tests.support.ledger import open_account


async def test_a_spend_reads_the_apps_state_by_key_not_through_its_attribute_fallback(
    http: httpx.AsyncClient,
    services: Services,
    writer_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Litestar's State answers ``state.services`` only after Python's own lookup has
    # failed and built an AttributeError (~5k instructions each, three a spend).
    account_id = unique("acct")
    await open_account(services.ledger, account_id, 1000)
    fallen_back: list[str] = []
    by_attribute = ImmutableState.__getattr__

    def noted(state: ImmutableState, key: str) -> object:
        fallen_back.append(key)
        return by_attribute(state, key)

    monkeypatch.setattr(ImmutableState, "__getattr__", noted)
    spent = await http.post(
        f"/v1/accounts/{account_id}/spend",
        json={"amount": 3},
        headers={**writer_headers, "Idempotency-Key": unique("key")},
    )
    refused = await http.post(
        f"/v1/accounts/{account_id}/spend",
        json={"amount": 3},
        headers={"Authorization": "Bearer ldg_0000000000000000_nope", "Idempotency-Key": "k"},
    )
    monkeypatch.undo()

    assert spent.status_code == 200
    assert spent.json()["balance"] == 997
    assert refused.status_code == 401
    assert refused.json() == {"message": "Unauthenticated."}
    assert [key for key in fallen_back if key in ("services", "express_lane")] == []
