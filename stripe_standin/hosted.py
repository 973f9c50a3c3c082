"""The hosted checkout page (``/c/pay/{id}``) and what its form posts: pay, cancel, expire.

Browsers (``Accept: text/html``) are redirected or shown the page again with the reason a
payment was refused; scripts get JSON. A script's ``POST <checkout_url>/pay`` without card
fields pays with the test Visa; ``mode=async`` (``outcome=fail``) pays by delayed method.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.enums import MediaType
from litestar.params import FromPath

from stripe_standin.cards import TEST_CARD, Card, check_card, digits
from stripe_standin.checkout import expire_session, pay_session
from stripe_standin.errors import StripeError, no_such
from stripe_standin.events import Event
from stripe_standin.objects import SessionRecord
from stripe_standin.page import KEPT_FIELDS, Problem, Typed, render_page
from stripe_standin.state import StandinState, error_response, get_state, json_response

_MESSAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,sans-serif;
color:#1a1f36;max-width:520px;margin:80px auto;padding:0 24px}}p{{color:#697386}}</style></head>
<body><h1>{title}</h1><p id="message">{message}</p></body>
</html>
"""

_NOT_FOUND = _MESSAGE.format(
    title="Something went wrong",
    message="The page you were looking for could not be found.",
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _find(state: StandinState, session_id: str) -> SessionRecord | None:
    record = state.sessions.get(session_id)
    if record is not None:
        state.expire_if_due(record, state.now())
    return record


def _html(page: str, status: int = 200) -> Response[str]:
    return Response(page, status_code=status, media_type=MediaType.HTML)


@get("/c/pay/{session_id:str}", media_type=MediaType.HTML)
async def hosted_page(request: Request[Any, Any, Any], session_id: FromPath[str]) -> Response[str]:
    """The hosted checkout page, or an HTML 404."""
    record = _find(get_state(request.app), session_id)
    if record is None:
        return _html(_NOT_FOUND, 404)
    return _html(render_page(record))


def _open_session(request: Request[Any, Any, Any], session_id: str) -> SessionRecord:
    record = _find(get_state(request.app), session_id)
    if record is None:
        raise no_such("checkout.session", session_id, "session")
    if record.data["status"] != "open":
        raise StripeError(400, f"This Checkout Session is {record.data['status']}, not open.")
    return record


async def _options(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The query string's fields, then those of a form or JSON body."""
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
    """Browsers go to ``target`` (``{CHECKOUT_SESSION_ID}`` filled in); scripts get JSON.

    ``delivered`` lists the events sent (or tried); ``held`` those a test holds back.
    """
    if not _is_browser(request):
        held = set(get_state(request.app).webhooks.held)
        return json_response(
            {
                "session": record.view(),
                "delivered": [e.id for e in events if e.id not in held],
                "held": [e.id for e in events if e.id in held],
            }
        )
    if target is None:
        page = _MESSAGE.format(title="Done", message=f"Checkout Session {escape(record.id)}.")
        return _html(page)
    location = target.replace("{CHECKOUT_SESSION_ID}", record.id)
    return Response(b"", status_code=303, headers={"Location": location})


def _failed(request: Request[Any, Any, Any], error: StripeError) -> Response[Any]:
    if not _is_browser(request):
        return error_response(error)
    page = _MESSAGE.format(title="Something went wrong", message=escape(error.message))
    return _html(page, error.status)


def _method(options: dict[str, str]) -> tuple[bool, bool]:
    """(asynchronous, fails): the page's ``method`` and ``bank_outcome``, or a script's
    ``mode`` and ``outcome``."""
    if "method" in options:
        asynchronous = _choice(options, "method", ("card", "bank_transfer")) == "bank_transfer"
        fails = asynchronous and _choice(options, "bank_outcome", ("success", "fail")) == "fail"
        return asynchronous, fails
    asynchronous = _choice(options, "mode", ("sync", "async")) == "async"
    return asynchronous, _choice(options, "outcome", ("success", "fail")) == "fail"


def _email(options: dict[str, str], record: SessionRecord) -> str | None:
    """The email typed on the page (None from a script that sends none)."""
    if record.data["customer_email"] or "email" not in options:
        return None
    email = options["email"].strip()
    if not email:
        raise StripeError(400, "Your email is incomplete.", param="email")
    if not _EMAIL.match(email) or len(email) > 512:
        raise StripeError(400, "Your email address is invalid.", param="email")
    return email


def _card(options: dict[str, str]) -> Card:
    """The card typed on the page; a script that sends no ``card_number`` pays with 4242.

    A script may send only ``card_number`` (to see a decline): the other fields then
    default to a valid expiry and CVC.
    """
    if "card_number" not in options:
        return TEST_CARD
    number = options["card_number"]
    amex = digits(number)[:2] in ("34", "37")
    return check_card(
        number,
        options.get("card_expiry", "12 / 34"),
        options.get("card_cvc", "1234" if amex else "123"),
        options.get("card_name"),
    )


@post("/c/pay/{session_id:str}/pay", status_code=200)
async def pay(request: Request[Any, Any, Any], session_id: FromPath[str]) -> Response[Any]:
    """Pay by card (the page's card fields; none: the test Visa) or by a delayed method.

    A refused card changes nothing: a browser sees the page again with Stripe's message
    (``402`` for a declined card), a script gets the Stripe ``card_error``.
    """
    try:
        options = await _options(request)
        asynchronous, fail = _method(options)
        record = _open_session(request, session_id)
        if fail and not asynchronous:
            raise StripeError(400, "outcome=fail needs mode=async.", param="outcome")
        if asynchronous and record.data["mode"] != "payment":
            raise StripeError(400, "mode=async is only for payment-mode sessions.", param="mode")
    except StripeError as error:
        return _failed(request, error)
    try:
        email = _email(options, record)
        card = TEST_CARD if asynchronous else _card(options)
    except StripeError as error:
        if not _is_browser(request):
            return error_response(error)
        typed = Typed({name: options[name] for name in KEPT_FIELDS if name in options})
        return _html(render_page(record, Problem(error.message, error.param), typed), error.status)
    state = get_state(request.app)
    events = await pay_session(
        state, record, asynchronous=asynchronous, fail=fail, card=card, email=email
    )
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
