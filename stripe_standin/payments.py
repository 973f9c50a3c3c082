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


def build_charge(
    payment_intent: dict[str, Any],
    now: int,
    *,
    payment_method_details: dict[str, Any] | None = None,
    billing_details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The succeeded Charge of a PaymentIntent (which becomes ``succeeded`` too)."""
    amount: int = payment_intent["amount"]
    charge = {
        "id": new_id("ch_"),
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": 0,
        "balance_transaction": None,
        "billing_details": billing_details or _no_billing_details(),
        "captured": True,
        "created": now,
        "currency": payment_intent["currency"],
        "dispute": None,
        "disputed": False,
        "failure_code": None,
        "failure_message": None,
        "livemode": False,
        "metadata": dict(payment_intent["metadata"]),
        "paid": True,
        "payment_intent": payment_intent["id"],
        "payment_method_details": payment_method_details or card_details(),
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


def card_details(
    brand: str = "visa", last4: str = "4242", exp_month: int = 12, exp_year: int = 2034
) -> dict[str, Any]:
    """A Charge's ``payment_method_details`` for a card (the test Visa unless told)."""
    return {
        "type": "card",
        "card": {
            "brand": brand,
            "country": "US",
            "exp_month": exp_month,
            "exp_year": exp_year,
            "funding": "credit",
            "last4": last4,
            "network": brand,
        },
    }


def _no_billing_details() -> dict[str, Any]:
    return {"address": None, "email": None, "name": None, "phone": None}


# --- Disputes ---------------------------------------------------------------------------------

INQUIRY_OPEN = ("warning_needs_response", "warning_under_review")
CLOSED = ("won", "lost", "warning_closed")
DISPUTE_FEE = 1500  # Stripe's US dispute fee, in cents; charged on every chargeback
EVIDENCE_DAYS = 7


def is_inquiry(dispute: dict[str, Any]) -> bool:
    """An inquiry (``warning_*``) withdraws no money; a chargeback does."""
    return str(dispute["status"]).startswith("warning_")


def is_closed(dispute: dict[str, Any]) -> bool:
    return dispute["status"] in CLOSED


def build_dispute(
    charge: dict[str, Any], *, reason: str, status: str, amount: int, now: int
) -> dict[str, Any]:
    """A new Dispute (an inquiry or a chargeback); marks the charge ``disputed``."""
    dispute_id = new_id("dp_")
    charge["disputed"] = True
    charge["dispute"] = dispute_id
    inquiry = status in INQUIRY_OPEN
    card = (charge.get("payment_method_details") or {}).get("card") or {}
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge["id"],
        "created": now,
        "currency": charge["currency"],
        "enhanced_eligibility_types": [],
        "evidence_details": {
            "due_by": now + EVIDENCE_DAYS * 24 * 60 * 60,
            "enhanced_eligibility": {},
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        # During an inquiry the payment can still be refunded; a chargeback took the money.
        "is_charge_refundable": inquiry and refundable(charge) > 0,
        "livemode": False,
        "metadata": {},
        "payment_intent": charge["payment_intent"],
        "payment_method_details": {
            "type": "card",
            "card": {
                "brand": card.get("brand", "visa"),
                "case_type": "inquiry" if inquiry else "chargeback",
                "network_reason_code": None,
            },
        },
        "reason": reason,
        "status": status,
    }


def withdraw_funds(dispute: dict[str, Any], now: int) -> None:
    """A chargeback takes the disputed amount and the dispute fee from the balance."""
    _add_balance_transaction(
        dispute,
        -int(dispute["amount"]),
        DISPUTE_FEE,
        f"Chargeback withdrawal for {dispute['charge']}",
        "dispute",
        now,
    )
    dispute["is_charge_refundable"] = False
    dispute["payment_method_details"]["card"]["case_type"] = "chargeback"


def reinstate_funds(dispute: dict[str, Any], now: int, amount: int) -> None:
    """A won chargeback gives the disputed amount back, a partly won one part of it (the fee
    stays charged)."""
    _add_balance_transaction(
        dispute,
        amount,
        0,
        f"Chargeback reversal for {dispute['charge']}",
        "dispute_reversal",
        now,
    )


def _add_balance_transaction(
    dispute: dict[str, Any], amount: int, fee: int, description: str, category: str, now: int
) -> None:
    currency = dispute["currency"]
    fees = [
        {
            "amount": fee,
            "application": None,
            "currency": currency,
            "description": "Dispute fee",
            "type": "stripe_fee",
        }
    ]
    dispute["balance_transactions"].append(
        {
            "id": new_id("txn_"),
            "object": "balance_transaction",
            "amount": amount,
            "available_on": now,
            "created": now,
            "currency": currency,
            "description": description,
            "exchange_rate": None,
            "fee": fee,
            "fee_details": fees if fee else [],
            "net": amount - fee,
            "reporting_category": category,
            "source": dispute["id"],
            "status": "available",
            "type": "adjustment",
        }
    )
