"""A Stripe Checkout session for a one-time top-up, from request to outcome.

The session's stream decides, once, what a payment is worth: its version is
what makes a paid session credit the account exactly once, whatever order
and however often Stripe's events arrive. Refunds and disputes change what
the purchase is still worth (ledger/domain/adjustments.py); each method returns
the credits the account must give back or get back, so that the session and
the account are written together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from eventsourcing.domain import Aggregate

from ledger.domain.adjustments import Dispute, Worth, newer, taken_back
from ledger.domain.events import (
    CheckoutExpired,
    CheckoutFailed,
    CheckoutPaid,
    CheckoutRequested,
    DisputeClosed,
    DisputeUpdated,
    PaymentDisputed,
    PaymentMismatched,
    PaymentRefunded,
)
from ledger.domain.evolution import Evolution, Records
from ledger.domain.ids import checkout_stream_id

PENDING = "pending"
PAID = "paid"
EXPIRED = "expired"
FAILED = "failed"
REFUNDED = "refunded"
MISMATCHED = "mismatched"

_SETTLED = (PAID, REFUNDED)

on = Evolution()


class Adjustment(msgspec.Struct, frozen=True):
    """Credits the account gives back (``clawed_back``, ``reversed``) or gets back (``restored``)."""

    dispute_id: str = ""
    clawed_back: int = 0
    reversed: int = 0
    restored: int = 0


class CheckoutSession(Records, Aggregate):
    """One Checkout session and the credits its payment is worth."""

    class_version = 2
    """Of its snapshots: version 2 keeps every dispute's status instead of the open one."""

    if TYPE_CHECKING:  # set by evolve()
        session_id: str
        account_id: str
        credits: int
        amount: int
        currency: str
        checkout_url: str
        expires_at: int
        recovered: bool
        status: str
        payment_intent: str | None
        amount_refunded: int
        credits_clawed_back: int
        credits_reversed: int
        disputes: dict[str, Dispute]

    @classmethod
    def request(
        cls,
        *,
        session_id: str,
        account_id: str,
        credits: int,
        amount: int,
        currency: str,
        checkout_url: str,
        expires_at: int,
        recovered: bool = False,
    ) -> CheckoutSession:
        """A session created at Stripe (``recovered``: first seen in a webhook)."""
        return cls._create(
            CheckoutRequested,
            id=checkout_stream_id(session_id),
            session_id=session_id,
            account_id=account_id,
            credits=credits,
            amount=amount,
            currency=currency,
            checkout_url=checkout_url,
            expires_at=expires_at,
            recovered=recovered,
        )

    @property
    def paid(self) -> bool:
        """Whether the payment went through (refunds and disputes do not undo that)."""
        return self.status in _SETTLED

    @property
    def settled(self) -> bool:
        """Whether ``pay`` has settled the session: paid, or a mismatch recorded."""
        return self.paid or self.status == MISMATCHED

    @property
    def credits_outstanding(self) -> int:
        """Credits of this purchase still on the account: not clawed back nor reversed."""
        return self.credits - self.credits_clawed_back - self.credits_reversed

    def pay(
        self,
        *,
        payment_intent: str | None,
        amount_paid: int,
        currency: str,
        for_review: bool = False,
    ) -> int:
        """Settle the payment once; return the credits to add to the account (0 if none).

        A mismatch between what was paid and what was asked credits nothing and is
        recorded for someone to look at, as is a payment ``for_review`` whatever it paid.
        """
        if self.settled:
            return 0
        if for_review or amount_paid != self.amount or currency.lower() != self.currency.lower():
            self.trigger_event(
                PaymentMismatched, amount_paid=amount_paid, currency=currency.lower()
            )
            return 0
        self.trigger_event(CheckoutPaid, payment_intent=payment_intent, amount_paid=amount_paid)
        return self.credits

    def expire(self) -> bool:
        """Mark an unpaid session expired; a paid one stays paid."""
        if self.status != PENDING:
            return False
        self.trigger_event(CheckoutExpired)
        return True

    def fail(self) -> bool:
        """Mark an unpaid session's delayed payment failed; a paid one stays paid."""
        if self.status != PENDING:
            return False
        self.trigger_event(CheckoutFailed)
        return True

    def _owed(self, amount_refunded: int, disputes: dict[str, Dispute]) -> Worth:
        """What refunds and disputes take back with these facts (nothing unless paid)."""
        if not self.paid:
            return Worth(0, 0)
        return taken_back(self.credits, self.amount, amount_refunded, disputes)

    def refund(self, amount_refunded: int) -> Adjustment:
        """Apply Stripe's cumulative ``amount_refunded``; an older, smaller figure changes nothing."""
        amount_refunded = min(amount_refunded, self.amount)
        if amount_refunded <= self.amount_refunded:
            return Adjustment()
        owed = self._owed(amount_refunded, self.disputes)
        clawed_back = owed.refunded - self.credits_clawed_back
        restored = max(self.credits_reversed - owed.disputed, 0)
        self.trigger_event(
            PaymentRefunded,
            amount_refunded=amount_refunded,
            credits_clawed_back=clawed_back,
            credits_restored=restored,
        )
        return Adjustment(
            dispute_id=self._last_dispute(), clawed_back=clawed_back, restored=restored
        )

    def dispute(self, dispute_id: str, status: str, amount: int) -> Adjustment:
        """Apply a dispute's status; one at an earlier stage than the one known changes nothing."""
        if not newer(self.disputes.get(dispute_id), status):
            return Adjustment()
        disputes = {**self.disputes, dispute_id: Dispute(status, amount)}
        change = self._owed(self.amount_refunded, disputes).disputed - self.credits_reversed
        self.trigger_event(
            DisputeUpdated,
            dispute_id=dispute_id,
            status=status,
            amount=amount,
            credits_reversed=max(change, 0),
            credits_restored=max(-change, 0),
        )
        return Adjustment(dispute_id=dispute_id, reversed=max(change, 0), restored=max(-change, 0))

    def _last_dispute(self) -> str:
        return next(reversed(self.disputes), "") if self.disputes else ""

    # --- how events change it ------------------------------------------------------------

    evolve = on.evolve

    @on(CheckoutRequested)
    def _requested(self, event: CheckoutRequested) -> None:
        self.session_id = event.session_id
        self.account_id = event.account_id
        self.credits = event.credits
        self.amount = event.amount
        self.currency = event.currency
        self.checkout_url = event.checkout_url
        self.expires_at = event.expires_at
        self.recovered = event.recovered
        self.status = PENDING
        self.payment_intent = None
        self.amount_refunded = 0
        self.credits_clawed_back = 0
        self.credits_reversed = 0
        self.disputes = {}

    @on(CheckoutPaid)
    def _paid(self, event: CheckoutPaid) -> None:
        self.status = PAID
        self.payment_intent = event.payment_intent

    @on(PaymentMismatched)
    def _mismatched(self, event: PaymentMismatched) -> None:
        self.status = MISMATCHED

    @on(CheckoutExpired)
    def _expired(self, event: CheckoutExpired) -> None:
        self.status = EXPIRED

    @on(CheckoutFailed)
    def _failed(self, event: CheckoutFailed) -> None:
        self.status = FAILED

    @on(PaymentRefunded)
    def _refunded(self, event: PaymentRefunded) -> None:
        self.amount_refunded = event.amount_refunded
        self.credits_clawed_back += event.credits_clawed_back
        self.credits_reversed -= event.credits_restored
        if event.amount_refunded >= self.amount and self.paid:
            self.status = REFUNDED

    @on(DisputeUpdated)
    def _dispute_updated(self, event: DisputeUpdated) -> None:
        self.disputes = {**self.disputes, event.dispute_id: Dispute(event.status, event.amount)}
        self.credits_reversed += event.credits_reversed - event.credits_restored

    @on(PaymentDisputed)
    def _disputed_before_inquiries(self, event: PaymentDisputed) -> None:
        # It reversed what was left; as a chargeback of the money not refunded it means the same.
        disputed = Dispute("needs_response", max(self.amount - self.amount_refunded, 0))
        self.disputes = {**self.disputes, event.dispute_id: disputed}
        self.credits_reversed += event.credits_reversed

    @on(DisputeClosed)
    def _closed_before_inquiries(self, event: DisputeClosed) -> None:
        known = self.disputes.get(event.dispute_id)
        amount = known.amount if known else 0
        closed = Dispute("won" if event.won else "lost", amount)
        self.disputes = {**self.disputes, event.dispute_id: closed}
        self.credits_reversed -= event.credits_restored

    # --- snapshots -----------------------------------------------------------------------

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        # Version 1 kept only the open dispute, and snapshots before recovery lacked it.
        disputes = state.setdefault("disputes", {})
        if open_dispute := state.pop("open_dispute", None):
            unrefunded = max(state["amount"] - state.get("amount_refunded", 0), 0)
            disputes[open_dispute] = {"status": "needs_response", "amount": unrefunded}
        state.setdefault("recovered", False)

    @staticmethod
    def restore_state(state: dict[str, Any]) -> None:
        """A snapshot's JSON leaves disputes as plain objects."""
        state["disputes"] = {k: Dispute.of(v) for k, v in state["disputes"].items()}
