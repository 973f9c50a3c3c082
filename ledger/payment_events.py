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


class CheckoutEvent(msgspec.Struct, frozen=True, kw_only=True, tag="checkout"):
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
    unit_amount: int | None = None
    """The price of a credit the session was made at, from its metadata (None before it had)."""
    price_currency: str | None = None
    """The currency it was made in, likewise."""
    marked: bool = False
    """Whether its metadata carries the ledger's mark: a session never recorded is credited
    from its metadata only if it does (else recorded for review, as a mismatch)."""


class RefundEvent(msgspec.Struct, frozen=True, kw_only=True, tag="refund"):
    """A charge was refunded; ``amount_refunded`` is cumulative, as Stripe reports it."""

    event_id: str
    payment_intent: str
    amount_refunded: int


class RefundUpdate(msgspec.Struct, frozen=True, kw_only=True, tag="refund_update"):
    """A refund, known by its id, reached ``status`` (Stripe's ``Refund.status``: ``pending``,
    ``requires_action``, ``succeeded``, ``failed`` or ``canceled``); ``amount`` is its own."""

    event_id: str
    refund_id: str
    payment_intent: str
    amount: int
    status: str


class DisputeEvent(msgspec.Struct, frozen=True, kw_only=True, tag="dispute"):
    """A dispute (or an inquiry) of a payment was opened, changed or closed.

    ``status`` is Stripe's: ``warning_*`` for an inquiry, ``needs_response``,
    ``under_review``, ``won`` or ``lost`` for a chargeback. ``amount`` is the
    disputed money in minor units (None when Stripe did not say).
    """

    event_id: str
    dispute_id: str
    payment_intent: str
    status: str
    amount: int | None


PaymentEvent = CheckoutEvent | RefundEvent | RefundUpdate | DisputeEvent
