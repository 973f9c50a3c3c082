"""The hosted checkout page (``/c/pay/{id}``) and its Pay / Cancel / Expire buttons."""

from __future__ import annotations

import time
from html import escape
from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.enums import MediaType
from litestar.params import FromPath

from stripe_standin.errors import StripeError, no_such
from stripe_standin.money import format_amount
from stripe_standin.objects import SessionRecord, complete, expire, expire_if_due
from stripe_standin.state import StandinState, get_state, json_response

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
<button id="cancel" type="submit" formaction="/c/pay/{id}/cancel"{disabled}>Cancel</button>
<button id="expire" type="submit" formaction="/c/pay/{id}/expire"{disabled}>Expire</button>
</form>
</main>
</body>
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


# For now the buttons only change the stored session and answer it as JSON. A later issue
# makes Pay/Expire deliver signed webhooks and redirect to success_url / cancel_url.


async def on_session_event(state: StandinState, event_type: str, record: SessionRecord) -> None:
    """Where webhook delivery to ``state.webhook_url`` (signed with ``webhook_secret``) goes."""
    del state, event_type, record  # not implemented yet


@post("/c/pay/{session_id:str}/pay", status_code=200)
async def pay(request: Request[Any, Any, Any], session_id: FromPath[str]) -> Response[bytes]:
    """Pay: the session becomes complete and paid."""
    record = _open_session(request, session_id)
    complete(record)
    await on_session_event(get_state(request.app), "checkout.session.completed", record)
    return json_response(record.view())


@post("/c/pay/{session_id:str}/cancel", status_code=200)
async def cancel(request: Request[Any, Any, Any], session_id: FromPath[str]) -> Response[bytes]:
    """Cancel: at Stripe the customer just leaves; the session stays open."""
    record = _open_session(request, session_id)
    return json_response(record.view())


@post("/c/pay/{session_id:str}/expire", status_code=200)
async def expire_now(request: Request[Any, Any, Any], session_id: FromPath[str]) -> Response[bytes]:
    """Expire: the session becomes expired, as if ``expires_at`` had passed."""
    record = _open_session(request, session_id)
    expire(record)
    await on_session_event(get_state(request.app), "checkout.session.expired", record)
    return json_response(record.view())


def make_hosted_router() -> Router:
    """The hosted page and its buttons."""
    return Router(path="/", route_handlers=[hosted_page, pay, cancel, expire_now])
