"""How long one call to Stripe may take: apart from the gateway, so that reading the setting
(``ledger config``, every command's start-up checks) does not import the SDK (~0.3 s)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ledger.text import decimal_number

DEFAULT_TIMEOUT_SECONDS = 5.0
"""Per attempt. The SDK's own default is 80 s: a Stripe that hangs would hold a purchase
request (and its client) for minutes across the retries. Creating a session takes well
under a second; ``STRIPE_TIMEOUT_SECONDS`` overrides this."""


def timeout_from_env(env: Mapping[str, str] | None = None) -> float:
    """``STRIPE_TIMEOUT_SECONDS`` if set to a positive number, else the default."""
    raw = (os.environ if env is None else env).get("STRIPE_TIMEOUT_SECONDS", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_SECONDS
    seconds = decimal_number(raw)
    if seconds is None or not 0 < seconds <= 300:
        raise ValueError(f"STRIPE_TIMEOUT_SECONDS must be a number of seconds (0-300], not {raw!r}")
    return seconds
