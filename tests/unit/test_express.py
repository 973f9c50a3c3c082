"""The express lane (api/express.py) on a small Litestar app: what it answers itself,
what it hands to the route (body and all), and how its errors are answered."""

from __future__ import annotations

from collections.abc import Awaitable
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from litestar import Litestar, post
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.params import RawBody
from litestar.testing import AsyncTestClient

from api.access.guards import ScopeGuard, Unauthenticated
from api.errors import EXCEPTION_HANDLERS
from api.express import Call, Declined, express
from api.validation import (
    IDEMPOTENCY_KEY_INVALID,
    IDEMPOTENCY_KEY_REPEATED,
    InvalidIdempotencyKey,
    idempotency_key_of,
)
from ledger.domain.errors import InsufficientCredits
from ledger.unit_of_work import answer_json, answer_positions


class Order(msgspec.Struct, frozen=True):
    amount: int


class Taken(msgspec.Struct, frozen=True):
    amount: int
    key: str
    by: str


routes_called: list[bytes] = []


async def take_express(call: Call) -> Taken:
    order = call.body_as(Order)
    key = call.idempotency_key()
    if order.amount > 100:
        raise InsufficientCredits("short")
    return Taken(amount=order.amount, key=key, by="lane")


async def needs_token(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if connection.headers.get("authorization") != "Bearer good":
        raise Unauthenticated


@post("/take", status_code=200, guards=[needs_token], middleware=[express(take_express)])
async def take(body: RawBody) -> dict[str, Any]:
    routes_called.append(body)
    return {"route": True, "body": body.decode()}


def small_app(*, express_lane: bool = True) -> Litestar:
    app = Litestar(
        route_handlers=[take],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=64,
        logging_config=None,
    )
    app.state.services = object()  # the lane hands it to the answers; these take none
    app.state.express_lane = express_lane
    return app


GOOD = {"Authorization": "Bearer good", "Idempotency-Key": "k-1"}


@pytest.fixture(autouse=True)
def forget_calls() -> None:
    routes_called.clear()


async def test_the_lane_answers_the_happy_path_without_the_route() -> None:
    async with AsyncTestClient(small_app()) as client:
        response = await client.post("/take", content=b'{"amount": 7}', headers=GOOD)

    assert response.status_code == 200
    assert response.json() == {"amount": 7, "key": "k-1", "by": "lane"}
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.content))
    assert routes_called == []


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"amount": "7"}', GOOD),  # not strictly an integer
        (b"not json", GOOD),
        (b"", GOOD),
        (b'{"amount": 7}', {"Authorization": "Bearer good"}),  # no Idempotency-Key
        (b'{"amount": 7}', {**GOOD, "Idempotency-Key": "tab\there"}),
    ],
)
async def test_what_the_lane_cannot_take_reaches_the_route_with_its_body(
    body: bytes, headers: dict[str, str]
) -> None:
    async with AsyncTestClient(small_app()) as client:
        response = await client.post("/take", content=body, headers=headers)

    assert response.status_code == 200
    assert response.json() == {"route": True, "body": body.decode()}
    assert routes_called == [body]


async def test_a_body_over_the_limit_is_refused_by_the_route_as_it_would_be() -> None:
    body = b'{"amount": 7, "pad": "' + b"x" * 100 + b'"}'
    async with AsyncTestClient(small_app()) as client:
        laned = await client.post("/take", content=body, headers=GOOD)
    async with AsyncTestClient(small_app(express_lane=False)) as client:
        plain = await client.post("/take", content=body, headers=GOOD)

    assert laned.status_code == plain.status_code == 413
    assert laned.json() == plain.json() == {"message": "The request body is too large."}
    assert routes_called == []


async def test_errors_of_the_guards_and_answers_are_the_apps_own() -> None:
    async with AsyncTestClient(small_app()) as client:
        short = await client.post("/take", content=b'{"amount": 500}', headers=GOOD)
        stranger = await client.post("/take", content=b'{"amount": 5}', headers={})

    assert (short.status_code, short.json()) == (402, {"message": "Insufficient credits."})
    assert (stranger.status_code, stranger.json()) == (401, {"message": "Unauthenticated."})
    assert stranger.headers["www-authenticate"] == "Bearer"
    assert routes_called == []


async def test_with_the_lane_off_every_request_takes_the_route() -> None:
    async with AsyncTestClient(small_app(express_lane=False)) as client:
        response = await client.post("/take", content=b'{"amount": 7}', headers=GOOD)

    assert response.json() == {"route": True, "body": '{"amount": 7}'}
    assert routes_called == [b'{"amount": 7}']


@pytest.mark.parametrize(
    ("headers", "read"),
    [
        ([], None),
        ([(b"idempotency-key", b"k-1")], "k-1"),
        ([(b"idempotency-key", b"k-1"), (b"idempotency-key", b"k-1")], "k-1"),
        ([(b"idempotency-key", b"k" * 255)], "k" * 255),
        ([(b"idempotency-key", b"")], IDEMPOTENCY_KEY_INVALID),
        ([(b"idempotency-key", b"k" * 256)], IDEMPOTENCY_KEY_INVALID),
        ([(b"idempotency-key", b"tab\there")], IDEMPOTENCY_KEY_INVALID),
        ([(b"idempotency-key", "caf\u00e9".encode("latin-1"))], IDEMPOTENCY_KEY_INVALID),
        ([(b"idempotency-key", b"a"), (b"idempotency-key", b"b")], IDEMPOTENCY_KEY_REPEATED),
    ],
)
def test_the_lane_declines_the_keys_a_route_refuses_read_by_one_rule(
    headers: list[tuple[bytes, bytes]], read: str | None
) -> None:
    """What the lane declines (it hands the request to the route) and what the route's 422
    says of a key (api/validation.py) come from one reading of the header."""
    scope: Any = {"headers": headers, "litestar_app": SimpleNamespace(state={"services": None})}
    call = Call(scope, b"")
    refused = read in (IDEMPOTENCY_KEY_INVALID, IDEMPOTENCY_KEY_REPEATED)

    if refused:
        with pytest.raises(InvalidIdempotencyKey) as invalid:
            idempotency_key_of(scope)
        assert str(invalid.value) == read
        with pytest.raises(Declined):
            call.optional_idempotency_key()
    else:
        assert idempotency_key_of(scope) == call.optional_idempotency_key() == read
    if refused or read is None:
        with pytest.raises(Declined):
            call.idempotency_key()
    else:
        assert call.idempotency_key() == read


async def test_an_answer_is_written_as_its_claim_recorded_it_and_no_other_is() -> None:
    """``answer_json`` gives the JSON recorded with a claim for that very answer only: an
    equal answer, or one outside the request that recorded it, is encoded anew."""
    recorded = Taken(amount=1, key="k", by="lane")
    with answer_positions() as scope:
        scope.recorded = (recorded, b'{"as":"recorded"}')
        assert answer_json(recorded) == b'{"as":"recorded"}'
        equal = Taken(amount=1, key="k", by="lane")
        assert answer_json(equal) == msgspec.json.encode(equal)
    assert answer_json(recorded) == msgspec.json.encode(recorded)


checked: list[str] = []


def token_is_good(scope: Any) -> Awaitable[None] | None:
    """A scope check: admitted at once, refused, or admitted after a wait (a lookup)."""
    checked.append(scope["path"])
    given = dict(scope["headers"]).get(b"authorization")
    if given == b"Bearer good":
        return None
    if given == b"Bearer later":
        return _admitted()
    raise Unauthenticated


async def _admitted() -> None:
    checked.append("waited")


@post(
    "/scoped",
    status_code=200,
    guards=[ScopeGuard(token_is_good)],
    middleware=[express(take_express)],
)
async def scoped(body: RawBody) -> dict[str, Any]:
    routes_called.append(body)
    return {"route": True, "body": body.decode()}


@pytest.mark.parametrize("express_lane", [True, False])
async def test_a_scope_guard_admits_in_the_lane_as_in_the_route(express_lane: bool) -> None:
    app = Litestar(
        route_handlers=[scoped], exception_handlers=EXCEPTION_HANDLERS, logging_config=None
    )
    app.state.services = object()
    app.state.express_lane = express_lane
    checked.clear()
    async with AsyncTestClient(app) as client:
        now = await client.post("/scoped", content=b'{"amount": 7}', headers=GOOD)
        later = await client.post(
            "/scoped", content=b'{"amount": 8}', headers={**GOOD, "Authorization": "Bearer later"}
        )
        stranger = await client.post("/scoped", content=b'{"amount": 5}', headers={})

    by = "lane" if express_lane else None
    if by:
        assert now.json() == {"amount": 7, "key": "k-1", "by": "lane"}
        assert later.json() == {"amount": 8, "key": "k-1", "by": "lane"}
    else:
        assert now.json()["route"] is later.json()["route"] is True
    assert (stranger.status_code, stranger.json()) == (401, {"message": "Unauthenticated."})
    assert checked == ["/scoped", "/scoped", "waited", "/scoped"]
