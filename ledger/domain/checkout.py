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

from ledger.domain.adjustments import (
    Dispute,
    Refund,
    Worth,
    newer,
    refund_heard,
    refunded_money,
    taken_back,
)
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
    RefundUpdated,
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
_SETTLED_OR_MISMATCHED = (*_SETTLED, MISMATCHED)

on = Evolution()


class Adjustment(msgspec.Struct, frozen=True):
    """Credits the account gives back (``clawed_back``, ``reversed``) or gets back
    (``restored`` for a dispute, ``given_back`` for a refund that failed)."""

    dispute_id: str = ""
    clawed_back: int = 0
    reversed: int = 0
    restored: int = 0
    refund_id: str = ""
    given_back: int = 0


class CheckoutSession(Records, Aggregate):
    """One Checkout session and the credits its payment is worth."""

    class_version = 3
    """Of its snapshots: version 2 keeps every dispute's status instead of the open one;
    version 3 keeps each refund known by its id, and the largest ``amount_refunded`` seen."""

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
        """The money its refunds return (``refunded_money`` of the two below)."""
        largest_refunded: int
        """The largest cumulative ``amount_refunded`` Stripe's ``charge.refunded`` told."""
        refunds: dict[str, Refund]
        """Each refund known by its id (``refund.*``, ``charge.refund.updated``)."""
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
        # Not ``self.paid or ...``: a property read inside another costs ~700 instructions
        # more, and a paid delivery asks four times.
        return self.status in _SETTLED_OR_MISMATCHED

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
        if amount_refunded <= self.largest_refunded:
            return Adjustment()
        refunded = self.money_refunded(amount_refunded, self.refunds)
        owed = self._owed(refunded, self.disputes)
        # The figure only grows, and with it what refunds take: never less than before.
        clawed_back = max(owed.refunded - self.credits_clawed_back, 0)
        restored = max(self.credits_reversed - owed.disputed, 0)
        self.trigger_event(
            PaymentRefunded,
            amount_refunded=amount_refunded,
            credits_clawed_back=clawed_back,
            credits_restored=restored,
            refunded_now=None if refunded == amount_refunded else refunded,
        )
        return Adjustment(
            dispute_id=self._last_dispute(), clawed_back=clawed_back, restored=restored
        )

    def update_refund(self, refund_id: str, amount: int, status: str) -> Adjustment:
        """Apply a refund's status, known by its id: one that failed (or was canceled) gives
        back what its clawback took, one not counted in ``amount_refunded`` yet takes it. A
        status at an earlier stage than the one known changes nothing (see ``REFUND_STAGE``)."""
        heard = refund_heard(self.refunds.get(refund_id), status, amount)
        if heard is None:
            return Adjustment()
        refunded = self.money_refunded(self.largest_refunded, {**self.refunds, refund_id: heard})
        owed = self._owed(refunded, self.disputes)
        refund_change = owed.refunded - self.credits_clawed_back
        dispute_change = owed.disputed - self.credits_reversed
        adjustment = Adjustment(
            dispute_id=self._last_dispute(),
            clawed_back=max(refund_change, 0),
            reversed=max(dispute_change, 0),
            restored=max(-dispute_change, 0),
            refund_id=refund_id,
            given_back=max(-refund_change, 0),
        )
        self.trigger_event(
            RefundUpdated,
            refund_id=refund_id,
            amount=heard.amount,
            status=status,
            amount_refunded=refunded,
            credits_clawed_back=adjustment.clawed_back,
            credits_given_back=adjustment.given_back,
            credits_reversed=adjustment.reversed,
            credits_restored=adjustment.restored,
        )
        return adjustment

    def money_refunded(self, amount_refunded: int, refunds: dict[str, Refund]) -> int:
        """The money these facts say its refunds returned, at most what was paid."""
        return min(refunded_money(amount_refunded, refunds), self.amount)

    def dispute(self, dispute_id: str, status: str, amount: int) -> Adjustment:
        """Apply a dispute's status; one at an earlier stage than the one known changes nothing,
        as does the same status of no more money (see ``newer``)."""
        if not newer(self.disputes.get(dispute_id), status, amount):
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
        self.largest_refunded = 0
        self.refunds = {}
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
        self.largest_refunded = event.amount_refunded
        self._refunded_now(
            event.amount_refunded if event.refunded_now is None else event.refunded_now
        )
        self.credits_clawed_back += event.credits_clawed_back
        self.credits_reversed -= event.credits_restored

    @on(RefundUpdated)
    def _refund_updated(self, event: RefundUpdated) -> None:
        self.refunds = {**self.refunds, event.refund_id: Refund(event.status, event.amount)}
        self._refunded_now(event.amount_refunded)
        self.credits_clawed_back += event.credits_clawed_back - event.credits_given_back
        self.credits_reversed += event.credits_reversed - event.credits_restored

    def _refunded_now(self, refunded: int) -> None:
        """Refunded in full, the purchase is ``refunded``; a refund failing makes it paid again."""
        self.amount_refunded = refunded
        if self.paid:
            self.status = REFUNDED if refunded >= self.amount else PAID

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
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        # Before refunds were known by id, the figure the session kept was the largest seen.
        state["largest_refunded"] = state.get("amount_refunded", 0)
        state["refunds"] = {}

    @staticmethod
    def restore_state(state: dict[str, Any]) -> None:
        """A snapshot's JSON leaves disputes and refunds as plain objects."""
        state["disputes"] = {k: Dispute.of(v) for k, v in state["disputes"].items()}
        state["refunds"] = {k: Refund.of(v) for k, v in state["refunds"].items()}
