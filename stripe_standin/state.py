"""In-memory state of one stand-in app, and small helpers shared by its handlers."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar import Litestar, Request, Response
from litestar.enums import MediaType
from litestar.types import Scope

from stripe_standin.errors import StripeError, invalid
from stripe_standin.events import Event
from stripe_standin.objects import SessionRecord, expire, new_id
from stripe_standin.validate import MIN_EXPIRY_SECONDS
from stripe_standin.webhooks import Webhooks

_REQUEST_ID = "stripe_standin.request_id"


@dataclass(frozen=True)
class IdempotentResult:
    """What a request with an ``Idempotency-Key`` answered, to replay it."""

    endpoint: str
    params: dict[str, Any]
    status: int
    body: bytes
    request_id: str
    at: int = 0  # when it was answered (unix time); a state file forgets keys after 24 hours


@dataclass
class StandinState:
    """Everything the stand-in remembers; kept on ``app.state.standin``."""

    public_base_url: str
    # The event log and the signed delivery of every event to the configured endpoint.
    webhooks: Webhooks = field(default_factory=Webhooks)
    sessions: dict[str, SessionRecord] = field(default_factory=dict)
    payment_intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    disputes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Keyed by (API key, Idempotency-Key): Stripe scopes keys per account/key.
    idempotency: dict[tuple[str, str], IdempotentResult] = field(default_factory=dict)
    fail_status: int = 500
    fail_count: int = 0
    # "error": answer fail_status; "hang": wait fail_seconds first (the caller times out);
    # "drop": handle the call, then cut the connection in the middle of the answer.
    fail_mode: str = "error"
    fail_seconds: float = 30.0
    # An "error" told as Stripe tells a failure it saved under the request's Idempotency-Key
    # (``Idempotent-Replayed: true``): it gives a key's first answer, a 500 too, to every retry.
    fail_replayed: bool = False
    # The next ``misprice_count`` sessions made come back with this total and currency
    # instead of their line items' (None: theirs), as a coupon, a price set up elsewhere or
    # another account's settings would make them (``/_standin/misprice-next``).
    misprice_count: int = 0
    misprice_amount_total: int | None = None
    misprice_currency: str | None = None
    # What "now" is for creating and expiring sessions; a simulation with a clock of its
    # own sets it (Stripe refuses an expires_at more than 24 hours after its now).
    clock: Callable[[], float] = time.time

    def now(self) -> int:
        return int(self.clock())

    # Stripe's 30 minutes; tests may start a stand-in that accepts sooner expiries.
    min_expiry_seconds: int = MIN_EXPIRY_SECONDS
    # Writes the state somewhere after each change (the state file); None: memory only.
    saver: Callable[[StandinState], None] | None = None
    # (expires_at, session id) of sessions that were open when added: a min-heap.
    _expiry_queue: list[tuple[int, str]] = field(default_factory=list, init=False, repr=False)

    def changed(self) -> None:
        """Call after every change: saves the state when it has a state file."""
        if self.saver is not None:
            self.saver(self)

    def add_session(self, record: SessionRecord) -> None:
        """Store a session (and watch its ``expires_at`` while it is open)."""
        self.sessions[record.id] = record
        if record.data["status"] == "open":
            heapq.heappush(self._expiry_queue, (int(record.data["expires_at"]), record.id))

    def expire_due(self, now: int) -> list[Event]:
        """Expire every open session whose ``expires_at`` has passed; record their events.

        Each gets exactly one ``checkout.session.expired``: a session leaves ``open`` once.
        The caller delivers the events (``webhooks.deliver_later``).
        """
        events: list[Event] = []
        queue = self._expiry_queue
        while queue and queue[0][0] <= now:
            _, session_id = heapq.heappop(queue)
            record = self.sessions.get(session_id)
            if record is not None and record.data["status"] == "open":
                events.append(self._expire(record))
        return events

    def expire_if_due(self, record: SessionRecord, now: int) -> bool:
        """Expire one session now if it is due (a read came before the sweeper); True if so."""
        if record.data["status"] != "open" or now < record.data["expires_at"]:
            return False
        self.webhooks.deliver_later(self._expire(record))
        return True

    def expire_now(self, record: SessionRecord) -> None:
        """Expire an open session now (the API's expire); its event is delivered after."""
        self.webhooks.deliver_later(self._expire(record))

    def _expire(self, record: SessionRecord) -> Event:
        expire(record)
        return self.webhooks.record("checkout.session.expired", record.view())

    def misprice(self, record: SessionRecord) -> None:
        """Give a new session the total and currency ``misprice-next`` asked for, if it did."""
        if self.misprice_count <= 0:
            return
        self.misprice_count -= 1
        if self.misprice_amount_total is not None:
            record.data["amount_total"] = self.misprice_amount_total
        if self.misprice_currency is not None:
            record.data["currency"] = self.misprice_currency

    def take_failure(self, *modes: str) -> int | None:
        """The status to fail this API call with, if a failure of one of ``modes`` is pending.

        No ``modes``: the default ``error`` and ``hang`` modes (what ``api_gate`` handles).
        """
        if self.fail_count <= 0 or self.fail_mode not in (modes or ("error", "hang")):
            return None
        self.fail_count -= 1
        return self.fail_status


def get_state(app: Litestar) -> StandinState:
    """The stand-in's state on an app made by ``create_standin_app``."""
    state = app.state.standin
    if not isinstance(state, StandinState):
        raise TypeError("not a stand-in app")
    return state


def request_id(scope: Scope) -> str:
    """This request's ``Request-Id`` (made on first use)."""
    scope_state: dict[str, Any] = scope.setdefault("state", {})  # type: ignore[typeddict-item]
    value = scope_state.get(_REQUEST_ID)
    if value is None:
        value = scope_state[_REQUEST_ID] = new_id("req_", 14)
    return str(value)


def json_response(
    body: bytes | dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response[bytes]:
    """A JSON response; ``bytes`` are sent as they are (for idempotent replays)."""
    content = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return Response(content, status_code=status, media_type=MediaType.JSON, headers=headers)


def error_response(error: StripeError) -> Response[bytes]:
    return json_response(error.body(), error.status, error.headers or None)


async def json_body(request: Request[Any, Any, Any], kind: type[Any]) -> Any:
    """A control endpoint's JSON body as ``kind`` (an empty body is ``{}``); 400 if it is not."""
    raw = await request.body()
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.DecodeError as exc:
        raise invalid(str(exc)) from exc
