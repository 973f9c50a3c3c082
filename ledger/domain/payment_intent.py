"""A Stripe payment intent: which Checkout session it paid, and what came before it did.

Stripe does not deliver in order, and a ``checkout.session.completed`` whose
first delivery failed is retried for days: a refund or a dispute, which name
only the payment intent, can arrive before the payment that links that intent
to one of our sessions. They are recorded here as they arrive and applied to
the session and its account when the payment lands, in the same commit.

Only such an early event opens the stream; a payment that finds none claims the
intent's link instead (a claim costs less than a stream: ``LINK_SCOPE`` in
ledger/handlers/payments.py). The refund that opens the stream claims the same
key, so a refund that looked for the link just before the payment made it (or a
payment that looked for this stream just before the refund opened it) meets the
other's claim and is decided again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate

from ledger.domain.adjustments import Dispute, Refund, newer, refund_heard
from ledger.domain.events import (
    DisputeRecordedBeforePayment,
    PaymentIntentLinked,
    PaymentIntentRecorded,
    RefundRecordedBeforePayment,
    RefundUpdateRecordedBeforePayment,
)
from ledger.domain.evolution import Evolution, Records
from ledger.domain.ids import payment_intent_stream_id

on = Evolution()


class PaymentIntent(Records, Aggregate):
    """One payment intent, as far as the ledger has heard of it."""

    class_version = 2
    """Of its snapshots: version 2 keeps the refunds known by their id."""

    if TYPE_CHECKING:  # set by evolve()
        payment_intent: str
        session_id: str | None
        amount_refunded: int
        refunds: dict[str, Refund]
        disputes: dict[str, Dispute]

    @classmethod
    def record(cls, payment_intent: str, session_id: str | None = None) -> PaymentIntent:
        """The first the ledger hears of ``payment_intent``."""
        return cls._create(
            PaymentIntentRecorded,
            id=payment_intent_stream_id(payment_intent),
            payment_intent=payment_intent,
            session_id=session_id,
        )

    def link(self, session_id: str) -> bool:
        """Name the session this intent paid; False if it was named already."""
        if self.session_id is not None:
            return False
        self.trigger_event(PaymentIntentLinked, session_id=session_id)
        return True

    def hold_refund(self, amount_refunded: int) -> None:
        """Keep a refund (Stripe's cumulative figure) until the payment lands."""
        if amount_refunded > self.amount_refunded:
            self.trigger_event(RefundRecordedBeforePayment, amount_refunded=amount_refunded)

    def hold_refund_update(self, refund_id: str, amount: int, status: str) -> None:
        """Keep a refund's status, known by its id, until the payment lands."""
        heard = refund_heard(self.refunds.get(refund_id), status, amount)
        if heard is not None:
            self.trigger_event(
                RefundUpdateRecordedBeforePayment,
                refund_id=refund_id,
                amount=heard.amount,
                status=status,
            )

    def hold_dispute(self, dispute_id: str, status: str, amount: int | None) -> None:
        """Keep a dispute's news until the payment lands."""
        if newer(self.disputes.get(dispute_id), status, amount):
            self.trigger_event(
                DisputeRecordedBeforePayment, dispute_id=dispute_id, status=status, amount=amount
            )

    evolve = on.evolve

    @on(PaymentIntentRecorded)
    def _recorded(self, event: PaymentIntentRecorded) -> None:
        self.payment_intent = event.payment_intent
        self.session_id = event.session_id
        self.amount_refunded = 0
        self.refunds = {}
        self.disputes = {}

    @on(PaymentIntentLinked)
    def _linked(self, event: PaymentIntentLinked) -> None:
        self.session_id = event.session_id

    @on(RefundRecordedBeforePayment)
    def _refund_held(self, event: RefundRecordedBeforePayment) -> None:
        self.amount_refunded = event.amount_refunded

    @on(RefundUpdateRecordedBeforePayment)
    def _refund_update_held(self, event: RefundUpdateRecordedBeforePayment) -> None:
        self.refunds = {**self.refunds, event.refund_id: Refund(event.status, event.amount)}

    @on(DisputeRecordedBeforePayment)
    def _dispute_held(self, event: DisputeRecordedBeforePayment) -> None:
        self.disputes = {**self.disputes, event.dispute_id: Dispute(event.status, event.amount)}

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["refunds"] = {}

    @staticmethod
    def restore_state(state: dict[str, Any]) -> None:
        """A snapshot's JSON leaves disputes and refunds as plain objects."""
        state["disputes"] = {k: Dispute.of(v) for k, v in state["disputes"].items()}
        state["refunds"] = {k: Refund.of(v) for k, v in state["refunds"].items()}
