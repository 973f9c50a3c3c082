"""Stripe-shaped webhook events, signed as Stripe signs them, for tests."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import stripe

from ledger.adapters.stripe_webhooks import MARK_KEY, MARK_VALUE

WEBHOOK_SECRET = "whsec_test_ledger_suite_current"
PREVIOUS_WEBHOOK_SECRET = "whsec_test_ledger_suite_previous"


def new_event_id() -> str:
    return f"evt_test_{secrets.token_hex(12)}"


def event_body(event_type: str, obj: dict[str, Any], event_id: str | None = None) -> str:
    """The JSON text of a Stripe event whose ``data.object`` is ``obj``."""
    return json.dumps(
        {
            "id": event_id or new_event_id(),
            "object": "event",
            "api_version": "2025-09-30.clover",
            "created": int(time.time()),
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
    )


def signature(body: str, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header, made by the SDK's own signer."""
    return stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp)


def checkout_session(
    session_id: str,
    *,
    account_id: str,
    credits: int,
    amount_total: int | None = None,
    currency: str = "usd",
    payment_status: str = "paid",
    status: str = "complete",
    payment_intent: str | None = None,
) -> dict[str, Any]:
    """A Checkout Session object the ledger made, as Stripe sends it in events."""
    return {
        "id": session_id,
        "object": "checkout.session",
        "amount_subtotal": credits if amount_total is None else amount_total,
        "amount_total": credits if amount_total is None else amount_total,
        "client_reference_id": account_id,
        "currency": currency,
        "expires_at": int(time.time()) + 3600,
        "livemode": False,
        "metadata": {"account_id": account_id, "credits": str(credits), MARK_KEY: MARK_VALUE},
        "mode": "payment",
        "payment_intent": payment_intent or f"pi_test_{secrets.token_hex(10)}",
        "payment_status": payment_status,
        "status": status,
        "url": None,
    }


def charge(payment_intent: str, *, amount: int, amount_refunded: int = 0) -> dict[str, Any]:
    return {
        "id": f"ch_test_{secrets.token_hex(10)}",
        "object": "charge",
        "amount": amount,
        "amount_refunded": amount_refunded,
        "currency": "usd",
        "payment_intent": payment_intent,
        "refunded": amount_refunded >= amount,
        "paid": True,
        "status": "succeeded",
    }


def dispute(dispute_id: str, payment_intent: str, *, amount: int, status: str) -> dict[str, Any]:
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "charge": f"ch_test_{secrets.token_hex(10)}",
        "currency": "usd",
        "payment_intent": payment_intent,
        "reason": "fraudulent",
        "status": status,
    }
