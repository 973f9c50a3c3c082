"""Stripe-shaped PaymentIntents, Charges, Refunds and Disputes (plain dicts, amounts in int)."""

from __future__ import annotations

from typing import Any

from stripe_standin.objects import new_id


def build_payment_intent(
    pi_id: str, amount: int, currency: str, metadata: dict[str, str], now: int
) -> dict[str, Any]:
    """A PaymentIntent still waiting for its money (``processing``)."""
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_received": 0,
        "currency": currency,
        "created": now,
        "latest_charge": None,
        "livemode": False,
        "metadata": dict(metadata),
        "status": "processing",
    }


def build_charge(payment_intent: dict[str, Any], now: int) -> dict[str, Any]:
    """The succeeded Charge of a PaymentIntent (which becomes ``succeeded`` too)."""
    amount: int = payment_intent["amount"]
    charge = {
        "id": new_id("ch_"),
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": 0,
        "balance_transaction": None,
        "captured": True,
        "created": now,
        "currency": payment_intent["currency"],
        "disputed": False,
        "failure_code": None,
        "failure_message": None,
        "livemode": False,
        "metadata": dict(payment_intent["metadata"]),
        "paid": True,
        "payment_intent": payment_intent["id"],
        "refunded": False,
        "status": "succeeded",
    }
    payment_intent.update(status="succeeded", amount_received=amount, latest_charge=charge["id"])
    return charge


def refundable(charge: dict[str, Any]) -> int:
    """What is left to refund (or to dispute) on a charge."""
    return int(charge["amount"]) - int(charge["amount_refunded"])


def build_refund(
    charge: dict[str, Any], amount: int, reason: str | None, metadata: dict[str, str], now: int
) -> dict[str, Any]:
    """A succeeded Refund; adds ``amount`` to the charge's cumulative ``amount_refunded``."""
    charge["amount_refunded"] += amount
    charge["refunded"] = charge["amount_refunded"] == charge["amount"]
    return {
        "id": new_id("re_"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": None,
        "charge": charge["id"],
        "created": now,
        "currency": charge["currency"],
        "metadata": dict(metadata),
        "payment_intent": charge["payment_intent"],
        "reason": reason,
        "status": "succeeded",
    }


def build_dispute(charge: dict[str, Any], reason: str, now: int) -> dict[str, Any]:
    """A Dispute over what was not refunded; marks the charge ``disputed``."""
    charge["disputed"] = True
    return {
        "id": new_id("dp_"),
        "object": "dispute",
        "amount": refundable(charge),
        "charge": charge["id"],
        "created": now,
        "currency": charge["currency"],
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": charge["payment_intent"],
        "reason": reason,
        "status": "needs_response",
    }
