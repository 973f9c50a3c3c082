"""What the payment provider tells the ledger, in the ledger's words (no Stripe types)."""

from __future__ import annotations

from enum import StrEnum

import msgspec


class CheckoutChange(StrEnum):
    """What happened to a Checkout session."""

    COMPLETED = "completed"
    PAYMENT_SUCCEEDED = "payment_succeeded"
    PAYMENT_FAILED = "payment_failed"
    EXPIRED = "expired"


class CheckoutEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A Checkout session changed; ``paid`` says whether its money arrived."""

    event_id: str
    change: CheckoutChange
    session_id: str
    paid: bool
    payment_intent: str | None
    amount_total: int | None
    currency: str | None
    account_id: str | None
    credits: int | None
    checkout_url: str | None
    expires_at: int | None


class RefundEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A charge was refunded; ``amount_refunded`` is cumulative, as Stripe reports it."""

    event_id: str
    payment_intent: str
    amount_refunded: int


class DisputeOpenedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A cardholder disputed a payment."""

    event_id: str
    dispute_id: str
    payment_intent: str


class DisputeClosedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A dispute ended; ``won`` when the merchant kept the money."""

    event_id: str
    dispute_id: str
    payment_intent: str
    won: bool


PaymentEvent = CheckoutEvent | RefundEvent | DisputeOpenedEvent | DisputeClosedEvent
