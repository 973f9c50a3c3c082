"""Authentication of ``/v1`` calls (and the stand-in's injected failures)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
from typing import Any

from litestar import Request

from stripe_standin.errors import StripeError
from stripe_standin.state import get_state

_AUTH_HEADERS = {"WWW-Authenticate": 'Basic realm="Stripe"'}
_NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
    "https://stripe.com/docs/api#authentication for details, or we can help at "
    "https://support.stripe.com/."
)
_KEY_PREFIX = re.compile(r"^[a-z]+_(?:test_|live_)?")


def api_key(request: Request[Any, Any, Any]) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or Basic auth with the key as user name."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user or None
    return None


def _mask(key: str) -> str:
    prefix = _KEY_PREFIX.match(key)
    start = prefix.end() if prefix else 0
    hidden = max(len(key) - start - 4, 0)
    return key[:start] + "*" * hidden + key[start + hidden :]


async def _hang(request: Request[Any, Any, Any], seconds: float) -> None:
    """Answer nothing for ``seconds``, as a Stripe that hangs; stop early if the caller left."""

    async def caller_left() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(caller_left(), seconds)


async def api_gate(request: Request[Any, Any, Any]) -> None:
    """Runs before every ``/v1`` handler: injected failures first, then authentication."""
    state = get_state(request.app)
    status = state.take_failure()
    if status is not None:
        if state.fail_mode == "hang":
            await _hang(request, state.fail_seconds)
        raise StripeError(
            status,
            "An unknown error occurred (injected by the stand-in's fail-next).",
            type_="api_error",
            headers={"Idempotent-Replayed": "true"} if state.fail_replayed else None,
        )
    key = api_key(request)
    if key is None:
        raise StripeError(401, _NO_KEY, headers=_AUTH_HEADERS)
    if not key.startswith("sk_"):
        raise StripeError(401, f"Invalid API Key provided: {_mask(key)}", headers=_AUTH_HEADERS)
