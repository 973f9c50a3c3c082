"""A Stripe Checkout session for a one-time top-up, from request to outcome.

The session's stream decides, once, what a payment is worth: its version is
what makes a paid session credit the account exactly once, whatever order
and however often Stripe's events arrive.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.domain.ids import checkout_stream_id

PENDING = "pending"
PAID = "paid"
EXPIRED = "expired"
FAILED = "failed"
REFUNDED = "refunded"
MISMATCHED = "mismatched"

_SETTLED = (PAID, REFUNDED)


class CheckoutSession(Aggregate):
    """One Checkout session and the credits its payment is worth."""

    @staticmethod
    def create_id(session_id: str, **_: Any) -> UUID:
        return checkout_stream_id(session_id)

    class CheckoutRequested(Aggregate.Created):
        """Version 2 added ``recovered``; version 1 events were all requested by us."""

        class_version = 2
        session_id: str
        account_id: str
        credits: int
        amount: int
        currency: str
        checkout_url: str
        expires_at: int
        recovered: bool

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["recovered"] = False

    @event(CheckoutRequested)
    def __init__(
        self,
        session_id: str,
        account_id: str,
        credits: int,
        amount: int,
        currency: str,
        checkout_url: str,
        expires_at: int,
        recovered: bool = False,
    ) -> None:
        """``recovered``: first seen in a webhook, rebuilt from the session's metadata."""
        self.session_id = session_id
        self.account_id = account_id
        self.credits = credits
        self.amount = amount
        self.currency = currency
        self.checkout_url = checkout_url
        self.expires_at = expires_at
        self.recovered = recovered
        self.status = PENDING
        self.payment_intent: str | None = None
        self.amount_refunded = 0
        self.credits_clawed_back = 0
        self.credits_reversed = 0
        self.open_dispute: str | None = None

    @property
    def paid(self) -> bool:
        """Whether the payment went through (refunds and disputes do not undo that)."""
        return self.status in _SETTLED

    @property
    def credits_outstanding(self) -> int:
        """Credits of this purchase still on the account: not clawed back nor reversed."""
        return self.credits - self.credits_clawed_back - self.credits_reversed

    def pay(self, *, payment_intent: str | None, amount_paid: int, currency: str) -> int:
        """Settle the payment once; return the credits to add to the account (0 if none).

        A mismatch between what was paid and what was asked credits nothing and is
        recorded for someone to look at.
        """
        if self.paid or self.status == MISMATCHED:
            return 0
        if amount_paid != self.amount or currency.lower() != self.currency.lower():
            self._record_mismatch(amount_paid=amount_paid, currency=currency.lower())
            return 0
        self._record_payment(payment_intent=payment_intent, amount_paid=amount_paid)
        return self.credits

    @event("CheckoutPaid")
    def _record_payment(self, payment_intent: str | None, amount_paid: int) -> None:
        self.status = PAID
        self.payment_intent = payment_intent

    @event("PaymentMismatched")
    def _record_mismatch(self, amount_paid: int, currency: str) -> None:
        self.status = MISMATCHED

    def expire(self) -> bool:
        """Mark an unpaid session expired; a paid one stays paid."""
        if self.status != PENDING:
            return False
        self._record_expiry()
        return True

    @event("CheckoutExpired")
    def _record_expiry(self) -> None:
        self.status = EXPIRED

    def fail(self) -> bool:
        """Mark an unpaid session's delayed payment failed; a paid one stays paid."""
        if self.status != PENDING:
            return False
        self._record_failure()
        return True

    @event("CheckoutFailed")
    def _record_failure(self) -> None:
        self.status = FAILED

    def refund(self, amount_refunded: int) -> int:
        """Apply Stripe's cumulative ``amount_refunded``; return the credits to claw back.

        The refunded share of the credits is ``credits * amount_refunded // amount``;
        only the part not clawed back already is returned, and never more than is
        still outstanding.
        """
        if not self.paid or amount_refunded <= self.amount_refunded:
            return 0
        refunded = min(amount_refunded, self.amount)
        share = self.credits * refunded // self.amount if self.amount else self.credits
        clawback = min(share - self.credits_clawed_back, self.credits_outstanding)
        self._record_refund(amount_refunded=refunded, credits_clawed_back=max(clawback, 0))
        return max(clawback, 0)

    @event("PaymentRefunded")
    def _record_refund(self, amount_refunded: int, credits_clawed_back: int) -> None:
        self.amount_refunded = amount_refunded
        self.credits_clawed_back += credits_clawed_back
        if amount_refunded >= self.amount:
            self.status = REFUNDED

    def open_dispute_case(self, dispute_id: str) -> int:
        """A dispute reverses what is left of the purchase; return the credits reversed."""
        if not self.paid or self.open_dispute is not None:
            return 0
        reversed_credits = self.credits_outstanding
        self._record_dispute(dispute_id=dispute_id, credits_reversed=reversed_credits)
        return reversed_credits

    @event("PaymentDisputed")
    def _record_dispute(self, dispute_id: str, credits_reversed: int) -> None:
        self.open_dispute = dispute_id
        self.credits_reversed += credits_reversed

    def close_dispute_case(self, dispute_id: str, *, won: bool) -> int:
        """Close the open dispute; a win returns the credits to restore."""
        if self.open_dispute != dispute_id:
            return 0
        restored = self.credits_reversed if won else 0
        self._record_dispute_closed(dispute_id=dispute_id, won=won, credits_restored=restored)
        return restored

    @event("DisputeClosed")
    def _record_dispute_closed(self, dispute_id: str, won: bool, credits_restored: int) -> None:
        self.open_dispute = None
        self.credits_reversed -= credits_restored
