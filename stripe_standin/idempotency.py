"""Stripe's ``Idempotency-Key``: replay a POST's first answer, refuse a reuse with other params."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response

from stripe_standin.auth import api_key
from stripe_standin.errors import StripeError, invalid
from stripe_standin.state import IdempotentResult, StandinState, json_response, request_id

Scope = tuple[str, str]  # (API key, Idempotency-Key): Stripe scopes keys per account/key


def idempotency_scope(request: Request[Any, Any, Any]) -> Scope | None:
    """The request's key with its API key, or None without an ``Idempotency-Key``."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if len(key) > 255:
        raise invalid("Idempotency keys must be at most 255 characters long.")
    return api_key(request) or "", key


def replay_if_known(
    state: StandinState, scope: Scope | None, endpoint: str, params: dict[str, Any]
) -> Response[bytes] | None:
    """The stored answer for this key, or None if the key is new (or absent)."""
    if scope is None:
        return None
    stored = state.idempotency.get(scope)
    if stored is None:
        return None
    key = scope[1]
    if stored.endpoint != endpoint:
        raise StripeError(
            400,
            "Keys for idempotent requests can only be used for the same endpoint they were "
            f"first used for ('{stored.endpoint}' vs '{endpoint}'). Try using a key other than "
            f"'{key}' if you meant to execute a different request.",
            type_="idempotency_error",
        )
    if stored.params != params:
        raise StripeError(
            400,
            "Keys for idempotent requests can only be used with the same parameters they were "
            f"first used with. Try using a key other than '{key}' if you meant to execute a "
            "different request.",
            type_="idempotency_error",
        )
    headers = {"Idempotent-Replayed": "true", "Original-Request": stored.request_id}
    return json_response(stored.body, stored.status, headers)


def remember(
    state: StandinState,
    scope: Scope | None,
    endpoint: str,
    params: dict[str, Any],
    body: bytes,
    request: Request[Any, Any, Any],
) -> None:
    """Store a successful answer. Only requests that got past validation count, as at Stripe."""
    if scope is not None:
        state.idempotency[scope] = IdempotentResult(
            endpoint, params, 200, body, request_id(request.scope), int(time.time())
        )
