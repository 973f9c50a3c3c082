"""The Stripe API routes (``/v1``): auth, idempotency, Checkout Sessions."""

from __future__ import annotations

import base64
import binascii
import re
import time
from typing import Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.params import FromPath

from stripe_standin.errors import StripeError, invalid, no_such
from stripe_standin.forms import FormError, parse_form
from stripe_standin.objects import SessionRecord, build_session, expire_if_due
from stripe_standin.state import (
    IdempotentResult,
    StandinState,
    get_state,
    json_response,
    request_id,
)
from stripe_standin.validate import (
    array,
    check_known,
    integer,
    validate_create,
    validate_retrieve,
)

_AUTH_HEADERS = {"WWW-Authenticate": 'Basic realm="Stripe"'}
_NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
    "https://stripe.com/docs/api#authentication for details, or we can help at "
    "https://support.stripe.com/."
)
_KEY_PREFIX = re.compile(r"^[a-z]+_(?:test_|live_)?")
_LINE_ITEM_LIST_PARAMS = frozenset({"ending_before", "expand", "limit", "starting_after"})


def api_key(request: Request[Any, Any, Any]) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or Basic auth with the key as user name."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user or None
    return None


def _mask(key: str) -> str:
    prefix = _KEY_PREFIX.match(key)
    start = prefix.end() if prefix else 0
    hidden = max(len(key) - start - 4, 0)
    return key[:start] + "*" * hidden + key[start + hidden :]


async def api_gate(request: Request[Any, Any, Any]) -> None:
    """Runs before every ``/v1`` handler: injected failures first, then authentication."""
    status = get_state(request.app).take_failure()
    if status is not None:
        raise StripeError(
            status,
            "An unknown error occurred (injected by the stand-in's fail-next).",
            type_="api_error",
        )
    key = api_key(request)
    if key is None:
        raise StripeError(401, _NO_KEY, headers=_AUTH_HEADERS)
    if not key.startswith("sk_"):
        raise StripeError(401, f"Invalid API Key provided: {_mask(key)}", headers=_AUTH_HEADERS)


def _params(raw: bytes | str) -> dict[str, Any]:
    try:
        return parse_form(raw)
    except (FormError, UnicodeDecodeError) as exc:
        raise invalid(str(exc)) from exc


def _query(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return _params(request.scope.get("query_string", b""))


def _replay(
    state: StandinState, scope: tuple[str, str], endpoint: str, params: dict[str, Any]
) -> Response[bytes] | None:
    stored = state.idempotency.get(scope)
    if stored is None:
        return None
    key = scope[1]
    if stored.endpoint != endpoint:
        raise StripeError(
            400,
            "Keys for idempotent requests can only be used for the same endpoint they were "
            f"first used for ('{stored.endpoint}' vs '{endpoint}'). Try using a key other than "
            f"'{key}' if you meant to execute a different request.",
            type_="idempotency_error",
        )
    if stored.params != params:
        raise StripeError(
            400,
            "Keys for idempotent requests can only be used with the same parameters they were "
            f"first used with. Try using a key other than '{key}' if you meant to execute a "
            "different request.",
            type_="idempotency_error",
        )
    headers = {"Idempotent-Replayed": "true", "Original-Request": stored.request_id}
    return json_response(stored.body, stored.status, headers)


def _session(state: StandinState, session_id: str) -> SessionRecord:
    record = state.sessions.get(session_id)
    if record is None:
        raise no_such("checkout.session", session_id, "session")
    expire_if_due(record, int(time.time()))
    return record


@post("/checkout/sessions", status_code=200)
async def create_checkout_session(request: Request[Any, Any, Any]) -> Response[bytes]:
    """``POST /v1/checkout/sessions``."""
    state = get_state(request.app)
    params = _params(await request.body())
    endpoint = "POST /v1/checkout/sessions"
    key = request.headers.get("idempotency-key")
    scope = (api_key(request) or "", key or "")
    if key is not None:
        if len(key) > 255:
            raise invalid("Idempotency keys must be at most 255 characters long.")
        replay = _replay(state, scope, endpoint, params)
        if replay is not None:
            return replay
    now = int(time.time())
    create = validate_create(params, now)
    record = build_session(create, now=now, public_base_url=state.public_base_url)
    state.sessions[record.id] = record
    body = msgspec.json.encode(record.view(create.expand))
    if key is not None:
        # Only requests that got past validation are remembered, as at Stripe.
        state.idempotency[scope] = IdempotentResult(
            endpoint, params, 200, body, request_id(request.scope)
        )
    return json_response(body)


@get("/checkout/sessions/{session_id:str}")
async def retrieve_checkout_session(
    request: Request[Any, Any, Any], session_id: FromPath[str]
) -> Response[bytes]:
    """``GET /v1/checkout/sessions/{id}``."""
    paths = validate_retrieve(_query(request))
    return json_response(_session(get_state(request.app), session_id).view(paths))


@get("/checkout/sessions/{session_id:str}/line_items")
async def list_checkout_session_line_items(
    request: Request[Any, Any, Any], session_id: FromPath[str]
) -> Response[bytes]:
    """``GET /v1/checkout/sessions/{id}/line_items`` (one page of up to ``limit`` items)."""
    params = _query(request)
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
            list_checkout_session_line_items,
        ],
        before_request=api_gate,
    )
