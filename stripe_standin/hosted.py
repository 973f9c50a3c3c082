"""The hosted checkout page (``/c/pay/{id}``) and its Pay / Cancel / Expire buttons."""

from __future__ import annotations

import time
from html import escape
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.enums import MediaType
from litestar.params import FromPath

from stripe_standin.checkout import expire_session, pay_session
from stripe_standin.errors import StripeError, no_such
from stripe_standin.events import Event
from stripe_standin.money import format_amount
from stripe_standin.objects import SessionRecord, expire_if_due
from stripe_standin.state import StandinState, error_response, get_state, json_response

_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Stripe stand-in checkout</title></head>
<body>
<main data-session-id="{id}" data-status="{status}">
<h1>{name}</h1>
<p id="credits" data-credits="{credits}">{credits} credits</p>
<p id="amount" data-amount="{amount}" data-currency="{currency}">{amount_text}</p>
<p id="status">Status: {status}</p>
<form method="post">
<button id="pay" type="submit" formaction="/c/pay/{id}/pay"{disabled}>Pay</button>
<button id="pay-async" type="submit" formaction="/c/pay/{id}/pay?mode=async"{disabled}>Pay later (succeeds)</button>
<button id="pay-async-fail" type="submit" formaction="/c/pay/{id}/pay?mode=async&amp;outcome=fail"{disabled}>Pay later (fails)</button>
<button id="cancel" type="submit" formaction="/c/pay/{id}/cancel"{disabled}>Cancel</button>
<button id="expire" type="submit" formaction="/c/pay/{id}/expire"{disabled}>Expire</button>
</form>
</main>
</body>
</html>
"""

_MESSAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1><p id="message">{message}</p></body>
</html>
"""

_NOT_FOUND = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Not found</title></head>
<body><h1>Something went wrong</h1><p>The page you were looking for could not be found.</p></body>
</html>
"""


def _find(state: StandinState, session_id: str) -> SessionRecord | None:
    record = state.sessions.get(session_id)
    if record is not None:
        expire_if_due(record, int(time.time()))
    return record


def render_page(record: SessionRecord) -> str:
    """The checkout page for one session."""
    data = record.data
    credits = sum(item["quantity"] for item in record.line_items)
    amount = data["amount_total"] or 0
    currency = data["currency"] or ""
    names = ", ".join(item["description"] for item in record.line_items) or "Checkout"
    return _PAGE.format(
        id=escape(record.id),
        status=escape(str(data["status"])),
        name=escape(names),
        credits=credits,
        amount=amount,
        currency=escape(currency),
        amount_text=escape(format_amount(amount, currency)),
        disabled="" if data["status"] == "open" else " disabled",
    )


@get("/c/pay/{session_id:str}", media_type=MediaType.HTML)
async def hosted_page(request: Request[Any, Any, Any], session_id: FromPath[str]) -> Response[str]:
    """The hosted checkout page, or an HTML 404."""
    record = _find(get_state(request.app), session_id)
    if record is None:
        return Response(_NOT_FOUND, status_code=404, media_type=MediaType.HTML)
    return Response(render_page(record), media_type=MediaType.HTML)


def _open_session(request: Request[Any, Any, Any], session_id: str) -> SessionRecord:
    record = _find(get_state(request.app), session_id)
    if record is None:
        raise no_such("checkout.session", session_id, "session")
    if record.data["status"] != "open":
        raise StripeError(400, f"This Checkout Session is {record.data['status']}, not open.")
    return record


async def _options(request: Request[Any, Any, Any]) -> dict[str, str]:
    """``mode`` / ``outcome`` from the query string, a form body, or a JSON body."""
    options = dict(parse_qsl(request.url.query, keep_blank_values=True))
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    try:
        if body and content_type.startswith("application/x-www-form-urlencoded"):
            options.update(parse_qsl(body.decode(), keep_blank_values=True))
        elif body and content_type.startswith("application/json"):
            decoded = msgspec.json.decode(body)
            if isinstance(decoded, dict):
                options.update({str(k): str(v) for k, v in decoded.items()})
    except (UnicodeDecodeError, msgspec.DecodeError) as exc:
        raise StripeError(400, f"Could not read the request body: {exc}") from exc
    return options


def _choice(options: dict[str, str], key: str, choices: tuple[str, ...]) -> str:
    value = options.get(key) or choices[0]
    if value not in choices:
        raise StripeError(400, f"Invalid {key}: must be one of {', '.join(choices)}", param=key)
    return value


def _is_browser(request: Request[Any, Any, Any]) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _answer(
    request: Request[Any, Any, Any], record: SessionRecord, events: list[Event], target: str | None
) -> Response[Any]:
    """Browsers go to ``target`` (``{CHECKOUT_SESSION_ID}`` filled in); scripts get JSON."""
    if not _is_browser(request):
        return json_response({"session": record.view(), "delivered": [e.id for e in events]})
    if target is None:
        page = _MESSAGE.format(title="Done", message=f"Checkout Session {escape(record.id)}.")
        return Response(page, media_type=MediaType.HTML)
    location = target.replace("{CHECKOUT_SESSION_ID}", record.id)
    return Response(b"", status_code=303, headers={"Location": location})


def _failed(request: Request[Any, Any, Any], error: StripeError) -> Response[Any]:
    if not _is_browser(request):
        return error_response(error)
    page = _MESSAGE.format(title="Something went wrong", message=escape(error.message))
    return Response(page, status_code=error.status, media_type=MediaType.HTML)


@post("/c/pay/{session_id:str}/pay", status_code=200)
async def pay(request: Request[Any, Any, Any], session_id: FromPath[str]) -> Response[Any]:
    """Pay; ``mode=async`` settles after completion, ``outcome=fail`` makes that fail."""
    try:
        options = await _options(request)
        asynchronous = _choice(options, "mode", ("sync", "async")) == "async"
        fail = _choice(options, "outcome", ("success", "fail")) == "fail"
        record = _open_session(request, session_id)
        if fail and not asynchronous:
            raise StripeError(400, "outcome=fail needs mode=async.", param="outcome")
        if asynchronous and record.data["mode"] != "payment":
            raise StripeError(400, "mode=async is only for payment-mode sessions.", param="mode")
    except StripeError as error:
        return _failed(request, error)
    state = get_state(request.app)
    events = await pay_session(state, record, asynchronous=asynchronous, fail=fail)
    target = record.data["success_url"] or record.data["return_url"]
    return _answer(request, record, events, target)


@post("/c/pay/{session_id:str}/cancel", status_code=200)
async def cancel(request: Request[Any, Any, Any], session_id: FromPath[str]) -> Response[Any]:
    """Cancel: at Stripe the customer just leaves; the session stays open."""
    try:
        record = _open_session(request, session_id)
    except StripeError as error:
        return _failed(request, error)
    return _answer(request, record, [], record.data["cancel_url"])


@post("/c/pay/{session_id:str}/expire", status_code=200)
async def expire_now(request: Request[Any, Any, Any], session_id: FromPath[str]) -> Response[Any]:
    """Expire: the session becomes expired, as if ``expires_at`` had passed."""
    try:
        record = _open_session(request, session_id)
    except StripeError as error:
        return _failed(request, error)
    events = await expire_session(get_state(request.app), record)
    return _answer(request, record, events, record.data["cancel_url"])


def make_hosted_router() -> Router:
    """The hosted page and its buttons."""
    return Router(path="/", route_handlers=[hosted_page, pay, cancel, expire_now])
