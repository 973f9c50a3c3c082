"""The Stripe API routes (``/v1``): auth, idempotency, Checkout Sessions."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.params import FromPath

from stripe_standin.auth import api_gate
from stripe_standin.errors import invalid, no_such
from stripe_standin.forms import FormError, parse_form
from stripe_standin.idempotency import idempotency_scope, remember, replay_if_known
from stripe_standin.objects import SessionRecord, build_session
from stripe_standin.state import StandinState, get_state, json_response
from stripe_standin.validate import (
    array,
    check_known,
    integer,
    validate_create,
    validate_retrieve,
)

_LINE_ITEM_LIST_PARAMS = frozenset({"ending_before", "expand", "limit", "starting_after"})
_EXPIRE_PARAMS = frozenset({"expand"})


def parse_params(raw: bytes | str) -> dict[str, Any]:
    try:
        return parse_form(raw)
    except (FormError, UnicodeDecodeError) as exc:
        raise invalid(str(exc)) from exc


def query_params(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return parse_params(request.scope.get("query_string", b""))


def _session(state: StandinState, session_id: str) -> SessionRecord:
    record = state.sessions.get(session_id)
    if record is None:
        raise no_such("checkout.session", session_id, "session")
    state.expire_if_due(record, state.now())
    return record


@post("/checkout/sessions", status_code=200)
async def create_checkout_session(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``POST /v1/checkout/sessions``."""
    state = get_state(request.app)
    params = parse_params(await request.body())
    endpoint = "POST /v1/checkout/sessions"
    scope = idempotency_scope(request)
    replay = replay_if_known(state, scope, endpoint, params)
    if replay is not None:
        return replay
    now = state.now()
    create = validate_create(params, now, min_expiry_seconds=state.min_expiry_seconds)
    record = build_session(create, now=now, public_base_url=state.public_base_url)
    state.misprice(record)
    state.add_session(record)
    body = msgspec.json.encode(record.view(create.expand))
    remember(state, scope, endpoint, params, body, request)
    state.changed()
    return json_response(body)


@get("/checkout/sessions/{session_id:str}")
async def retrieve_checkout_session(
    request: Request[Any, Any, Any], session_id: FromPath[str]
) -> Response[bytes]:
    """``GET /v1/checkout/sessions/{id}``."""
    paths = validate_retrieve(query_params(request))
    return json_response(_session(get_state(request.app), session_id).view(paths))


@post("/checkout/sessions/{session_id:str}/expire", status_code=200)
async def expire_checkout_session(
    request: Request[Any, Any, Any], session_id: FromPath[str]
) -> Response[bytes]:
    """``POST /v1/checkout/sessions/{id}/expire``: an open session expires now (and
    ``checkout.session.expired`` is sent); any other is refused, as Stripe does."""
    state = get_state(request.app)
    params = parse_params(await request.body())
    check_known(params, _EXPIRE_PARAMS, "")
    endpoint = f"POST /v1/checkout/sessions/{session_id}/expire"
    scope = idempotency_scope(request)
    replay = replay_if_known(state, scope, endpoint, params)
    if replay is not None:
        return replay
    record = _session(state, session_id)
    if record.data["status"] != "open":
        raise invalid(
            'Only Checkout Sessions with a status in ["open"] can be expired. This '
            f'Checkout Session has a status of "{record.data["status"]}".'
        )
    state.expire_now(record)
    body = msgspec.json.encode(record.view())
    remember(state, scope, endpoint, params, body, request)
    state.changed()
    return json_response(body)


@get("/checkout/sessions/{session_id:str}/line_items")
async def list_checkout_session_line_items(
    request: Request[Any, Any, Any], session_id: FromPath[str]
) -> Response[bytes]:
    """``GET /v1/checkout/sessions/{id}/line_items`` (one page of up to ``limit`` items)."""
    params = query_params(request)
    check_known(params, _LINE_ITEM_LIST_PARAMS, "")
    if params.get("expand") is not None:
        array(params["expand"], "expand")
    limit = integer(params.get("limit", "10"), "limit")
    if limit < 1:
        raise invalid("This value must be greater than or equal to 1.", "limit")
    if limit > 100:
        raise invalid("This value must be less than or equal to 100.", "limit")
    listing = _session(get_state(request.app), session_id).line_items_list()
    data = listing["data"]
    return json_response({**listing, "data": data[:limit], "has_more": len(data) > limit})


def make_api_router() -> Router:
    """The ``/v1`` routes, each behind :func:`api_gate`."""
    return Router(
        path="/v1",
        route_handlers=[
            create_checkout_session,
            retrieve_checkout_session,
            expire_checkout_session,
            list_checkout_session_line_items,
        ],
        before_request=api_gate,
    )
