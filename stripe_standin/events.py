"""Stripe Event objects, frozen as the exact bytes every delivery of them sends."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import msgspec

from stripe_standin.objects import new_id

API_VERSION = "2025-09-30.clover"


@dataclass(frozen=True)
class Event:
    """One event: its id, type, and the JSON body (a snapshot taken when it happened)."""

    id: str
    type: str
    body: bytes

    def as_dict(self) -> dict[str, Any]:
        return dict(msgspec.json.decode(self.body))


def make_event(
    event_type: str,
    obj: dict[str, Any],
    *,
    now: int,
    previous_attributes: dict[str, Any] | None = None,
    request_id: str | None = None,
    idempotency_key: str | None = None,
) -> Event:
    """An event about ``obj`` as it is now (encoding it copies it, so later changes don't show)."""
    event_id = new_id("evt_")
    data: dict[str, Any] = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    body = msgspec.json.encode(
        {
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": now,
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": request_id, "idempotency_key": idempotency_key},
            "type": event_type,
        }
    )
    return Event(event_id, event_type, body)


def signature_header(body: bytes, secret: str, timestamp: int) -> str:
    """``t=<ts>,v1=<hex>``: HMAC-SHA256 keyed by the whole ``whsec_`` string over ``"<t>.<body>"``."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
