"""The express lane of the busiest routes: their usual answer without Litestar's per-request work.

For each call Litestar builds a Request, resolves the route's dependencies, runs its
DTO and builds a Response: about half of the CPU of a balance read (bench/HISTORY.md).
A spend, a balance read, a hold placed, captured or released and a Stripe delivery each
carry ``express(...)`` as their innermost middleware. Litestar has routed the request
and the app's middleware (request id, metrics, access line, consistency headers) runs
around it as around any request. The lane checks the caller with the route's own
guards, decodes the body straight into the route's Struct, calls the function the route
itself calls and writes the JSON.

What it cannot take as it is, it hands to the route unchanged, body and all: a missing
or malformed body or header, a body over the limit, a client gone. So every refusal of
input is Litestar's own, in the contract's words. An error from the guards or the
command (401, 402, 404, 503, ...) is answered by the app's exception handlers, as the
route's would be, and nothing is run twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from litestar.connection import ASGIConnection
from litestar.handlers import HTTPRouteHandler
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from api.access.guards import ScopeCheck, ScopeGuard, authenticated
from api.access.tokens import Principal
from api.body_headers import body_refusal
from api.errors import send_error
from api.headers import first_header
from api.services import Services
from api.validation import (
    NOT_JSON_ERRORS,
    InvalidIdempotencyKey,
    idempotency_key_of,
    is_utf8,
    repeated_fields,
)
from ledger.unit_of_work import answer_json

S = TypeVar("S", bound=msgspec.Struct)


class Declined(Exception):
    """The lane does not take this request as it is: the route answers it."""


class Call:
    """One request as the lane sees it: its scope, its body and the caller."""

    __slots__ = ("body", "scope", "services")

    def __init__(self, scope: Scope, body: bytes) -> None:
        self.scope = scope
        self.body = body
        self.services: Services = scope["litestar_app"].state["services"]

    @property
    def principal(self) -> Principal:
        """The caller the route's guards admitted."""
        return authenticated(self.scope)

    def path_param(self, name: str) -> str:
        return str(self.scope["path_params"][name])

    def header(self, name: bytes) -> str | None:
        """The first header called ``name`` (lower case), if any."""
        return first_header(self.scope, name)

    def body_as(self, model: type[S]) -> S:
        """The body as ``model``, decoded strictly as ``api.validation.Body`` decodes it."""
        if body_refusal(self.scope) is not None or not is_utf8(self.body):
            raise Declined  # the route words the refusal
        try:
            if repeated_fields(self.body, model):
                raise Declined
            return msgspec.json.decode(self.body, type=model)
        except (msgspec.ValidationError, *NOT_JSON_ERRORS):
            raise Declined from None

    def idempotency_key(self) -> str:
        """The ``Idempotency-Key`` header, as ``api.validation.IdempotencyKey`` admits it."""
        try:
            key = idempotency_key_of(self.scope)  # not through the method below: a call fewer
        except InvalidIdempotencyKey:
            raise Declined from None
        if key is None:
            raise Declined
        return key

    def optional_idempotency_key(self) -> str | None:
        """The ``Idempotency-Key`` header if given, as ``OptionalIdempotencyKey`` admits it."""
        try:
            return idempotency_key_of(self.scope)
        except InvalidIdempotencyKey:
            raise Declined from None


Answer = Callable[[Call], Awaitable[msgspec.Struct]]


def express(answer: Answer, *, reads_body: bool = True) -> Callable[[ASGIApp], ASGIApp]:
    """A route's middleware that answers with ``answer`` what it can (see the module)."""

    def wrap(app: ASGIApp) -> ASGIApp:  # Litestar passes the route's own stack as ``app``
        checks: tuple[ScopeCheck, ...] | None = None

        async def lane(scope: Scope, receive: Receive, send: Send) -> None:
            nonlocal checks
            if not scope["litestar_app"].state["express_lane"]:
                await app(scope, receive, send)
                return
            # (No typing.cast on this path: a call each, and a generic alias made each time.)
            handler: HTTPRouteHandler = scope["route_handler"]  # type: ignore[assignment]
            messages: list[ReceiveMessage] = []
            body = b""
            if reads_body:
                limit = handler.resolve_request_max_body_size()
                if _declared_over(scope, limit):  # the route answers 413 before reading
                    await app(scope, receive, send)
                    return
                messages, whole = await _read_body(receive, limit)
                if whole is None:
                    await app(scope, _replaying(messages, receive), send)
                    return
                body = whole
            try:
                if checks is None:  # this stack's one handler's, found at its first request
                    checks = _checks_of(handler)
                if checks:
                    for check in checks:
                        if (waiting := check(scope)) is not None:
                            await waiting
                else:
                    await _guarded(handler, scope, receive)
                result = await answer(Call(scope, body))
            except Declined:
                await app(scope, _replaying(messages, receive), send)
                return
            except Exception as error:  # answered as the app answers it
                await send_error(scope, receive, send, error)
                return
            await _answer_json(send, handler.status_code, result)

        return lane

    return wrap


def _checks_of(handler: HTTPRouteHandler) -> tuple[ScopeCheck, ...]:
    """The route's guards as scope checks; none when one of them is not a ``ScopeGuard`` (or
    it has none): ``_guarded`` calls them then."""
    guards = handler.resolve_guards()
    checks = tuple(guard.check for guard in guards if isinstance(guard, ScopeGuard))
    return checks if len(checks) == len(guards) else ()


async def _guarded(handler: HTTPRouteHandler, scope: Scope, receive: Receive) -> None:
    """The route's guards called as Litestar calls them."""
    connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope, receive)
    for guard in handler.resolve_guards():  # made async by Litestar
        await guard(connection, handler)  # type: ignore[misc]


def _declared_over(scope: Scope, limit: int | None) -> bool:
    """Whether the ``Content-Length`` header says the body is over ``limit`` (Litestar's
    route answers 413 then, before reading; the lane would wait for the body), or says it
    in more digits than a length has (leading zeros pass the HTTP parser, int() refuses a
    text of over 4,300 digits): the route answers that too."""
    declared = first_header(scope, b"content-length")
    if limit is None or declared is None or not (declared.isascii() and declared.isdigit()):
        return False
    return len(declared) > _LENGTH_DIGITS_MAX or int(declared) > limit


_LENGTH_DIGITS_MAX = 19
"""More than any body's length has (a 64-bit count)."""


async def _read_body(
    receive: Receive, limit: int | None
) -> tuple[list[ReceiveMessage], bytes | None]:
    """The messages read, and the body they hold: None when it is not whole (over
    ``limit``, or the client sent something else: it left)."""
    messages: list[ReceiveMessage] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunk: bytes = message.get("body", b"")  # type: ignore[assignment]
        chunks.append(chunk)
        size += len(chunk)
        if limit is not None and size > limit:
            return messages, None
        if not message.get("more_body", False):
            return messages, chunk if len(chunks) == 1 else b"".join(chunks)


def _replaying(messages: list[ReceiveMessage], receive: Receive) -> Receive:
    """``receive`` with the messages the lane read given back first."""
    pending = iter(messages)

    async def replay() -> ReceiveMessage:
        return next(pending, None) or await receive()

    return replay


async def _answer_json(send: Send, status: int, result: msgspec.Struct) -> None:
    """``result`` as Litestar's Response sends JSON: ``content-type``, ``content-length``."""
    body = answer_json(result)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
