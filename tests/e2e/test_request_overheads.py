"""Work a request would repeat that the API does once, or more cheaply, with the same answers
(api/app.py, api/express.py, api/access/guards.py; bench.spend_instructions counts them)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from litestar import Litestar
from litestar.datastructures.state import ImmutableState
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

from api.services import Services
from tests.conftest import unique
from tests.support.ledger import open_account


def route_handlers(app: Litestar) -> Iterator[HTTPRouteHandler]:
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            yield from route.route_handlers


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


async def test_each_route_handler_resolves_its_exception_handlers_once(
    ledger_app: Litestar,
) -> None:
    # Litestar's own OPTIONS handlers (slots only) still resolve theirs per request.
    handlers = [h for h in route_handlers(ledger_app) if "OPTIONS" not in h.http_methods]
    assert len(handlers) > 30
    for handler in handlers:
        first = handler.resolve_exception_handlers()
        assert handler.resolve_exception_handlers() is first
        # ... and it is the map Litestar itself would resolve for the handler now
        assert first == type(handler).resolve_exception_handlers(handler)


async def test_errors_are_still_answered_by_the_apps_handlers_once_resolved(
    http: httpx.AsyncClient,
    services: Services,
    writer_headers: dict[str, str],
) -> None:
    account_id = unique("acct")
    await open_account(services.ledger, account_id, 10)

    async def spend(amount: object) -> httpx.Response:
        return await http.post(
            f"/v1/accounts/{account_id}/spend",
            json={"amount": amount},
            headers={**writer_headers, "Idempotency-Key": unique("key")},
        )

    short = await spend(11)  # the lane: a domain error
    not_an_integer = await spend("7")  # the route: Litestar's validation
    unknown = await http.post(
        f"/v1/accounts/{unique('acct')}/spend",
        json={"amount": 1},
        headers={**writer_headers, "Idempotency-Key": unique("key")},
    )
    wrong_method = await http.put(f"/v1/accounts/{account_id}/spend", headers=writer_headers)

    assert (short.status_code, short.json()) == (402, {"message": "Insufficient credits."})
    assert not_an_integer.status_code == 422
    assert not_an_integer.json()["errors"] == {"amount": ["The amount field must be an integer."]}
    assert unknown.status_code == 404
    assert set(unknown.json()) == {"message"}
    assert wrong_method.status_code == 405
    assert set(wrong_method.json()) == {"message"}
