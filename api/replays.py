"""``Idempotent-Replayed: true`` on an answer the ledger gave again rather than decided now.

As Stripe marks its own: a request repeated with the same ``Idempotency-Key`` (a spend,
a hold, a grant, a purchase), a capture or release repeated as it was, or a Stripe event
delivered again gets the answer recorded the first time, and this header says so. A first
answer carries no such header.

The ledger knows, the HTTP edge says: the unit of work sets
``ledger.unit_of_work.answer_replayed`` in the request's task when it replays, and this
pure-ASGI middleware reads it when the answer starts. It costs a context variable set and
read per request, nothing on the way in.
"""

from __future__ import annotations

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ledger.unit_of_work import answer_replayed

IDEMPOTENT_REPLAYED = "Idempotent-Replayed"

_HEADER = (IDEMPOTENT_REPLAYED.lower().encode(), b"true")


def replayed_answers(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: add ``Idempotent-Replayed: true`` when the ledger replayed the answer."""

    async def marking_replays(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start" and answer_replayed.get():
                message["headers"] = [*message.get("headers", []), _HEADER]
            await send(message)

        # A server may run requests one after another in one context: start each unmarked.
        token = answer_replayed.set(False)
        try:
            await app(scope, receive, send_marked)
        finally:
            answer_replayed.reset(token)

    return marking_replays
