"""Signatures on outbound notifications, in the scheme Stripe uses for its own webhooks.

``Ledger-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">``, keyed
by the whole ``whsec_…`` string, so a receiver can verify it with
``stripe.WebhookSignature.verify_header(body, header, secret)`` or a few lines
of ``hmac``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SIGNATURE_HEADER = "Ledger-Signature"


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` and 256 random bits."""
    return "whsec_" + secrets.token_urlsafe(32)


def signature(body: str, secret: str, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed by ``secret``."""
    signed = f"{timestamp}.{body}".encode()
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(body: str, secret: str, timestamp: int) -> str:
    """The ``Ledger-Signature`` value for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={signature(body, secret, timestamp)}"
