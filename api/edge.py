"""The one ASGI middleware every HTTP request passes: its id, its metrics, its access line,
whether its answer was replayed and where it stands.

One wrapper of ``send`` (a middleware each would add five) and one clock read at
each end, for: the request id (the caller's ``X-Request-Id`` if sane, else a new
one; on every log line of the request and echoed on the answer), the request
counter and latency histogram (by route template, never the raw path, so the
series stay bounded), the access line (``ledger.access`` at INFO), and
``Idempotent-Replayed: true`` on an answer the ledger gave again rather than decided
now, as Stripe marks its own (a repeated ``Idempotency-Key``, capture or release, a
Stripe event delivered again; a first answer has no such header). The ledger knows
that, the edge says it: the unit of work marks the request's ``answer_positions``
replayed when it replays. And ``Ledger-Position``, ``Ledger-Read-From`` and
``Ledger-Views-Behind`` (api/read_side.py): the request's ``answer_positions`` and the
``ReadRequest`` it holds are made here, ``consistency_headers`` (a middleware, after routing) reads
``Ledger-Min-Position`` into it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Awaitable, Iterable
from typing import cast

import msgspec
from litestar.exceptions import LitestarException, NotFoundException
from litestar.middleware._internal.exceptions import ExceptionHandlerMiddleware
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Message,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)

from api.errors import send_error
from api.headers import first_header
from api.log_context import access_enabled_for, log_access, reset_request_id, set_request_id
from api.metrics import observe_request
from api.read_side import POSITION_HEADER, READ_FROM_HEADER, VIEWS_BEHIND_HEADER, ReadRequest
from ledger.request_scope import RequestScope
from ledger.unit_of_work import answer_positions

UNMATCHED_ROUTE = "unmatched"
"""The route of a request that matched none (a 404 or a 405 answered by Litestar)."""

IDEMPOTENT_REPLAYED = "Idempotent-Replayed"

CLIENT_CLOSED = 499
"""The status counted and logged for a request whose client went away before its answer
(nginx's): the server error Litestar answers a body cut short with is no one's answer."""

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_HEADER = REQUEST_ID_HEADER.lower().encode()
_REPLAYED = (IDEMPOTENT_REPLAYED.lower().encode(), b"true")
_POSITION = POSITION_HEADER.encode()
_READ_FROM = READ_FROM_HEADER.encode()
_VIEWS_BEHIND = (VIEWS_BEHIND_HEADER.lower().encode(), b"true")


_STOPPING = msgspec.json.encode({"message": "The server is stopping; please retry."})
_STOPPING_BODY: HTTPResponseBodyEvent = {
    "type": "http.response.body",
    "body": _STOPPING,
    "more_body": False,
}


def _stopping() -> HTTPResponseStartEvent:
    """The head of a 503 for a request a forced stop cut off (a new one each time: the
    edge adds its headers to it)."""
    return {
        "type": "http.response.start",
        "status": 503,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(_STOPPING)).encode()),
            (b"retry-after", b"1"),
            (b"connection", b"close"),
        ],
    }


_LISTING_METHODS = (204, 405)
"""The statuses whose answers list a path's methods in ``Allow`` (OPTIONS', a 405)."""


def _head_with_get(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``Allow`` naming HEAD wherever it names GET (see ``answered_requests``)."""
    listed = []
    for name, value in headers:
        if name.lower() == b"allow":
            methods = [m.strip() for m in value.split(b",")]
            if b"GET" in methods and b"HEAD" not in methods:
                value = b", ".join(sorted([*methods, b"HEAD"]))
        listed.append((name, value))
    return listed


def _given_request_id(scope: Scope) -> str | None:
    given = first_header(scope, _REQUEST_ID_HEADER)
    return given if given is not None and _SANE_REQUEST_ID.fullmatch(given) else None


def _router_within(app: ASGIApp) -> ASGIApp | None:
    """What Litestar's exception middleware wraps, when ``app`` is that middleware as Litestar
    makes it for the app (nothing else around the router: no CORS); else None."""
    if (
        type(app) is ExceptionHandlerMiddleware
        and app.exception_handlers is None
        and app.debug is None
    ):
        return app.app
    return None


def _answering(error: Exception) -> ASGIApp:
    """Litestar's exception middleware around an app that raises ``error``: the answer it
    would have given had it caught it."""

    async def raising(scope: Scope, receive: Receive, send: Send) -> None:
        raise error

    return ExceptionHandlerMiddleware(raising, debug=None)


def answered_requests(app: ASGIApp) -> ASGIApp:
    """Wrap the app: see the module.

    ``app`` is Litestar's ``asgi_handler``: its exception middleware around the router. Its
    send wrapper (a coroutine a message, to know whether the answer has started) and its
    frame cost a spend ~2 % (callgrind); the edge knows that already (``status``). So it
    calls the router itself and hands an error to that same middleware, around an app that
    raises it: Litestar's own answer to it (its exception handlers, hooks and logging). Where
    more wraps the router (CORS), ``app`` is called whole.
    """
    router = _router_within(app)
    inner = app if router is None else router
    errors_here = router is not None

    async def edge(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        current = _given_request_id(scope) or os.urandom(16).hex()
        echoed = (_REQUEST_ID_HEADER, current.encode())
        token = set_request_id(current)
        status = 0  # no answer started yet
        client_gone = False

        async def receive_noting_disconnect() -> ReceiveMessage:
            nonlocal client_gone
            message = await receive()
            if message["type"] == "http.disconnect":
                client_gone = True
            return message

        def send_with_id(message: Message) -> Awaitable[None]:
            # Not a coroutine of its own: it hands back the server's (one fewer a message).
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ())]
                if status in _LISTING_METHODS:
                    headers = _head_with_get(headers)
                if written.highest:
                    headers.append((_POSITION, str(written.highest).encode()))
                if reads.read_from:
                    headers.append((_READ_FROM, reads.read_from.encode()))
                    if reads.behind:
                        headers.append(_VIEWS_BEHIND)
                headers.append(echoed)
                if written.replayed:
                    headers.append(_REPLAYED)
                message["headers"] = headers
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}  # its Content-Length stays GET's
            return send(message)

        # Litestar routes HEAD only to handlers declared for it: a GET's answers it here,
        # for every route (RFC 9110, 9.3.2). The server keeps the scope saying HEAD.
        head = scope["method"] == "HEAD"  # type: ignore[typeddict-item]  # an HTTP scope
        routed = cast(Scope, {**scope, "method": "GET"}) if head else scope
        try:
            # Its reads wait for their connections once in all (ledger/store/read_connections.py).
            with answer_positions() as written:
                reads = written.reads = ReadRequest()
                if "\x00" in scope["path"]:  # no id holds one (and PostgreSQL's text cannot)
                    await send_error(scope, receive, send_with_id, NotFoundException())
                else:
                    try:
                        await inner(routed, receive_noting_disconnect, send_with_id)
                    except Exception as error:
                        if not errors_here:
                            raise
                        if status:  # as Litestar's middleware says it
                            raise LitestarException(
                                "Exception caught after response started"
                            ) from error
                        await _answering(error)(routed, receive_noting_disconnect, send_with_id)
        except asyncio.CancelledError:
            # Only a forced stop cancels a request (a second Ctrl-C, api/startup.py): it is
            # answered as a database outage is, and a command it cut off is retried safely
            # with its idempotency key.
            if status:
                raise
            # An answer at no position, nor one the ledger gave before.
            written, reads = RequestScope(), ReadRequest()
            await send_with_id(_stopping())
            await send_with_id(_STOPPING_BODY)  # a HEAD's without the body
        finally:
            seconds = time.perf_counter() - started
            method = scope["method"]  # type: ignore[typeddict-item]  # an HTTP scope
            route = routed.get("path_template") or UNMATCHED_ROUTE
            if client_gone and (not status or status >= 500):
                status = CLIENT_CLOSED
            status = status or 500  # the app failed before it started an answer
            observe_request(route, method, status, seconds)
            if access_enabled_for(logging.INFO):
                log_access(method, route, status, seconds)
            reset_request_id(token)

    return edge
