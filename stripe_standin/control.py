"""Test controls that Stripe does not have (``/_standin/...``)."""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.params import FromPath
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from stripe_standin.disputes import appeal_dispute, close_dispute, open_dispute, update_dispute
from stripe_standin.errors import StripeError, invalid, no_such
from stripe_standin.events import Event
from stripe_standin.refunds import fail_refund
from stripe_standin.state import get_state, json_body, json_response
from stripe_standin.webhooks import NotHeld


class FailNext(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /_standin/fail-next``."""

    status: int = 500
    count: int = 1
    mode: Literal["error", "hang", "drop"] = "error"
    seconds: float = 30.0
    replayed: bool = False


@post("/fail-next", status_code=200)
async def fail_next(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Make the next ``count`` ``/v1`` calls fail as ``mode`` says.

    ``error`` (the default): answer ``status`` with an ``api_error``. ``hang``: wait
    ``seconds`` first, as a Stripe that times out. ``drop``: handle the call, then
    close the connection halfway through the answer, as a network that fails.
    ``replayed``: the error says ``Idempotent-Replayed: true``, as Stripe's replay of a
    failure it saved under the request's ``Idempotency-Key``.
    """
    data: FailNext = await json_body(request, FailNext)
    if not 400 <= data.status <= 599 or data.count < 0 or not 0 <= data.seconds <= 600:
        raise invalid("status must be 400-599, count >= 0 and seconds 0-600")
    state = get_state(request.app)
    state.fail_status, state.fail_count = data.status, data.count
    state.fail_mode, state.fail_seconds = data.mode, data.seconds
    state.fail_replayed = data.replayed
    return json_response(
        {
            "status": data.status,
            "count": data.count,
            "mode": data.mode,
            "seconds": data.seconds,
            "replayed": data.replayed,
        }
    )


class MispriceNext(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /_standin/misprice-next``."""

    amount_total: int | None = None
    currency: str | None = None
    count: int = 1


@post("/misprice-next", status_code=200)
async def misprice_next(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Make the next ``count`` sessions created come back with ``amount_total`` and
    ``currency`` (each left as the line items make it when not given), as a coupon, a
    price set up elsewhere or another account's settings make Stripe's answer differ
    from what was asked. ``count: 0`` takes it back."""
    data: MispriceNext = await json_body(request, MispriceNext)
    if data.count < 0 or (data.amount_total is not None and data.amount_total < 0):
        raise invalid("count and amount_total must be >= 0")
    state = get_state(request.app)
    state.misprice_count = data.count
    state.misprice_amount_total, state.misprice_currency = data.amount_total, data.currency
    return json_response(
        {"amount_total": data.amount_total, "currency": data.currency, "count": data.count}
    )


def drop_connections(app: ASGIApp) -> ASGIApp:
    """Middleware for ``fail-next`` with ``mode: drop``: cut the answer off halfway.

    The call is handled (a session is created, an idempotent answer remembered);
    only its answer is lost: the status line and half the body go out, then the
    server closes the connection (uvicorn does when an app ends an unfinished answer).
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not get_state(scope["litestar_app"]).take_failure("drop"):
            await app(scope, receive, send)
            return
        cut = False

        async def send_half(message: Message) -> None:
            nonlocal cut
            if cut:
                return
            if message["type"] == "http.response.body":
                body = message.get("body", b"")
                await send(
                    {
                        "type": "http.response.body",
                        "body": body[: len(body) // 2],
                        "more_body": True,
                    }
                )
                cut = True
                return
            await send(message)

        await app(scope, receive, send_half)

    return middleware


@get("/sessions")
async def list_sessions(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Every stored session, oldest first, with line items expanded."""
    now = int(time.time())
    state = get_state(request.app)
    sessions = list(state.sessions.values())
    for record in sessions:
        state.expire_if_due(record, now)
    return json_response(
        {"object": "list", "data": [record.view(("line_items",)) for record in sessions]}
    )


class WebhookEndpoint(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /_standin/webhook-endpoint``: where events go (``url: null``: nowhere)."""

    url: str | None
    secret: str | None = None


@post("/webhook-endpoint", status_code=200)
async def set_webhook_endpoint(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Like ``RunningStandin.configure_webhooks``, over HTTP."""
    data: WebhookEndpoint = await json_body(request, WebhookEndpoint)
    get_state(request.app).webhooks.configure(data.url, data.secret)
    return json_response({"url": data.url})


@get("/events")
async def list_events(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Every event, oldest first; ``?type=charge.refunded`` keeps one type."""
    wanted = request.query_params.get("type")
    events = get_state(request.app).webhooks.events.values()
    bodies = [event.body for event in events if wanted is None or event.type == wanted]
    return json_response(b'{"object":"list","data":[' + b",".join(bodies) + b"]}")


def _event(request: Request[Any, Any, Any], event_id: str) -> Event:
    event = get_state(request.app).webhooks.events.get(event_id)
    if event is None:
        raise no_such("event", event_id, "id")
    return event


@get("/events/{event_id:str}")
async def retrieve_event(
    request: Request[Any, Any, Any], event_id: FromPath[str]
) -> Response[bytes]:
    return json_response(_event(request, event_id).body)


@post("/events/{event_id:str}/resend", status_code=200)
async def resend_event(request: Request[Any, Any, Any], event_id: FromPath[str]) -> Response[bytes]:
    """Deliver the same event (id and body) once more, freshly signed; no retries."""
    attempt = await get_state(request.app).webhooks.attempt(_event(request, event_id))
    return json_response({"status": attempt.status, "error": attempt.error})


class HoldWebhooks(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /_standin/webhooks/hold``: the event types to hold (``"*"``: all)."""

    types: list[str]


class ReleaseWebhooks(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /_standin/webhooks/release`` (optional): which held events, in order."""

    ids: list[str] | None = None


def _held(request: Request[Any, Any, Any]) -> dict[str, Any]:
    webhooks = get_state(request.app).webhooks
    return {
        "types": sorted(webhooks.held_types),
        "held": [
            {"id": event_id, "type": webhooks.events[event_id].type} for event_id in webhooks.held
        ],
    }


@post("/webhooks/hold", status_code=200)
async def hold_webhooks(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Record later events of these types without delivering them, until released.

    Replaces the held types (``{"types": []}`` holds nothing more); already held events
    stay held.
    """
    body: HoldWebhooks = await json_body(request, HoldWebhooks)
    get_state(request.app).webhooks.hold(body.types)
    return json_response(_held(request))


@get("/webhooks/held")
async def list_held_webhooks(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The held types and the held events (id and type), in the order they happened."""
    return json_response(_held(request))


@post("/webhooks/release", status_code=200)
async def release_webhooks(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Deliver held events: every one in the order they happened, or ``ids`` in that order.

    Answers each first attempt (failures are retried as usual); 400 and nothing delivered
    if one of ``ids`` is not held. The held types stay as they are.
    """
    body: ReleaseWebhooks = await json_body(request, ReleaseWebhooks)
    webhooks = get_state(request.app).webhooks
    try:
        attempts = await webhooks.release(body.ids)
    except NotHeld as exc:
        raise StripeError(
            400, f"Not held (unknown or already released): {', '.join(exc.event_ids)}", param="ids"
        ) from exc
    released = [
        {
            "id": attempt.event_id,
            "type": webhooks.events[attempt.event_id].type,
            "status": attempt.status,
            "error": attempt.error,
        }
        for attempt in attempts
    ]
    return json_response({"released": released, **_held(request)})


@get("/deliveries")
async def list_deliveries(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Every delivery attempt, oldest first."""
    attempts = get_state(request.app).webhooks.attempts
    return json_response({"object": "list", "data": [item.as_dict() for item in attempts]})


def make_control_router() -> Router:
    """The ``/_standin`` routes."""
    return Router(
        path="/_standin",
        route_handlers=[
            fail_next,
            misprice_next,
            list_sessions,
            set_webhook_endpoint,
            list_events,
            retrieve_event,
            resend_event,
            list_deliveries,
            hold_webhooks,
            list_held_webhooks,
            release_webhooks,
            open_dispute,
            update_dispute,
            close_dispute,
            appeal_dispute,
            fail_refund,
        ],
    )
