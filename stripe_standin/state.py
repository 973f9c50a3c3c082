"""In-memory state of one stand-in app, and small helpers shared by its handlers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar import Litestar, Response
from litestar.enums import MediaType
from litestar.types import Scope

from stripe_standin.errors import StripeError
from stripe_standin.objects import SessionRecord, new_id
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
