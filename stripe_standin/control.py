"""Test controls that Stripe does not have (``/_standin/...``)."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.params import JSONBody

from stripe_standin.objects import expire_if_due
from stripe_standin.state import get_state, json_response


class FailNext(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /_standin/fail-next``."""

    status: int = 500
    count: int = 1


@post("/fail-next", status_code=200)
async def fail_next(request: Request[Any, Any, Any], data: JSONBody[FailNext]) -> Response[bytes]:
    """Make the next ``count`` ``/v1`` calls answer ``status`` with an ``api_error``."""
    if not 400 <= data.status <= 599 or data.count < 0:
        return json_response({"error": "status must be 400-599 and count >= 0"}, 400)
    state = get_state(request.app)
    state.fail_status, state.fail_count = data.status, data.count
    return json_response({"status": data.status, "count": data.count})


@get("/sessions")
async def list_sessions(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Every stored session, oldest first, with line items expanded."""
    now = int(time.time())
    sessions = list(get_state(request.app).sessions.values())
    for record in sessions:
        expire_if_due(record, now)
    return json_response(
        {"object": "list", "data": [record.view(("line_items",)) for record in sessions]}
    )


def make_control_router() -> Router:
    """The ``/_standin`` routes."""
    return Router(path="/_standin", route_handlers=[fail_next, list_sessions])
