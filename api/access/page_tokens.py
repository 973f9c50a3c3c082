"""Signed links for the page Stripe Checkout sends a paying customer back to.

``/checkout/success`` shows the new balance and the account id. Stripe puts the
session id in the link (``{CHECKOUT_SESSION_ID}``), and session ids travel
further than the customer's own browser (support tickets, logs, screenshots,
the Stripe dashboard), so a session id alone must show nothing. The link also
carries ``t``, made when the session is requested, before Stripe names it:

    t = <valid until, Unix seconds> "." <base64url HMAC-SHA256(key, purpose, account id, valid until)>

The page shows the purchase only when ``t`` is unexpired and signed for the
account the session belongs to, so ``t`` works only for sessions of that
account and only until a while after the session itself can no longer be paid.
It holds no account id (the link shows none), and it depends only on the
account and the session's expiry, so concurrent duplicate requests still send
Stripe identical parameters (its idempotency needs that).

The key is ``LEDGER_PAGE_KEY`` (production requires it); development generates
one under the data folder. Changing it only makes older links show the plain
"payment received" page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable

PURPOSE = b"ledger checkout success page v1"

GRACE_SECONDS = 3600
"""How long after the session's own expiry the link still shows the purchase: the
customer may pay in the last minute, and the page keeps refreshing until the
payment is confirmed."""


class PageTokens:
    """Makes and checks ``t`` for one key."""

    def __init__(
        self,
        key: str | bytes,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key.encode() if isinstance(key, str) else key
        self._clock = clock

    def _mac(self, account_id: str, valid_until: int) -> str:
        message = b"\0".join((PURPOSE, account_id.encode(), str(valid_until).encode()))
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def for_checkout(self, account_id: str, expires_at: int) -> str:
        """``t`` for a session of ``account_id`` that can be paid until ``expires_at``."""
        valid_until = expires_at + GRACE_SECONDS
        return f"{valid_until}.{self._mac(account_id, valid_until)}"

    def shows(self, token: str | None, account_id: str) -> bool:
        """Whether ``token`` lets the page show a session of ``account_id`` now."""
        if not token or not token.isascii():  # '²' passes isdigit(), and compare_digest
            return False  # raises on text that is not ASCII: a 500 told a session existed
        valid_until, _, mac = token.partition(".")
        if not valid_until.isdigit() or len(valid_until) > 12 or not mac:
            return False
        if self._clock() > int(valid_until):
            return False
        return hmac.compare_digest(mac, self._mac(account_id, int(valid_until)))
