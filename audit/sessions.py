"""A Checkout session and its payment intent as the audit judges them: what the session
was paid and took back, by kind, and what its intent kept before its payment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from audit.replay_state import IntentAt, PurchaseAt, SessionAt, Stream
from ledger.domain.adjustments import REFUND_STAGE, Worth, later_stage, newer, taken_back
from ledger.domain.checkout import MISMATCHED, CheckoutSession
from ledger.domain.events import (
    CreditsClawedBack,
    CreditsReversed,
    DisputeClosed,
    DisputeUpdated,
    PaymentDisputed,
)
from ledger.domain.payment_intent import PaymentIntent

_MOVED_SAID = (
    "clawed back for refunds",
    "given back for failed refunds",
    "reversed for chargebacks",
    "restored after chargebacks",
)


def purchase_at(session: CheckoutSession, stream: Stream) -> PurchaseAt:
    """The purchases view's row the replay makes of a session."""
    mismatched = session.status == MISMATCHED
    return PurchaseAt(
        status="pending" if mismatched else session.status,
        needs_review=mismatched,
        amount_refunded=session.amount_refunded,
        credits_clawed_back=session.credits_clawed_back,
        credits_reversed=session.credits_reversed,
        credits=session.credits,
        amount=session.amount,
        currency=session.currency,
        position=stream.first_position,
        created_at=stream.requested_at,
        paid_at=stream.paid_at,
        updated_at=stream.updated_at,
    )


_DISPUTES = frozenset({DisputeUpdated, PaymentDisputed, DisputeClosed})


def changes_purchase(event: Any) -> bool:
    """Whether a session's event changes its purchase row: every one does but a dispute's
    that moved no credits (the row shows what the purchase is worth, not the dispute)."""
    if type(event) in _DISPUTES:  # by class, as _HOLD_STATUS: isinstance of a union costs more
        return bool(getattr(event, "credits_reversed", 0) or getattr(event, "credits_restored", 0))
    return True


def session_at(stream_id: UUID, stream: Stream) -> SessionAt:
    """What the audit judges a session by once its stream is replayed: what it took back and
    what the rule makes of its facts."""
    session: CheckoutSession = stream.aggregate
    rule = rounded_down = None
    # Judged on the facts, not on the figure the session recorded from them: a forged
    # RefundUpdated or PaymentRefunded.refunded_now may say less was refunded than they do.
    refunded = session.money_refunded(session.largest_refunded, session.refunds)
    if not stream.older_disputes:
        facts = (session.credits, session.amount, refunded, session.disputes)
        rule = taken_back(*facts) if session.paid else Worth(0, 0)
        if session.paid and session.disputes:
            rounded_down = taken_back(*facts, chargeback_rounded_up=False)
            rounded_down = None if rounded_down == rule else rounded_down
    return SessionAt(
        stream_id=stream_id,
        session_id=session.session_id,
        account_id=session.account_id,
        credits=session.credits,
        paid=session.paid,
        clawed_back=session.credits_clawed_back,
        reversed=session.credits_reversed,
        rule=rule,
        rounded_down=rounded_down,
        payment_intent=session.payment_intent,
        checkout_url=session.checkout_url,
        amount_refunded=session.amount_refunded,
        refunded_by_facts=refunded,
        amount=session.amount,
        largest_refunded=session.largest_refunded,
        refunds=session.refunds,
        disputes=session.disputes,
        moved=tuple(stream.moved),
    )


def intent_at(intent: PaymentIntent) -> IntentAt | None:
    """What a linked intent kept before its payment (None: linked and nothing kept, or not
    linked: a refund of another product's payment stays there)."""
    if not intent.session_id or not (intent.amount_refunded or intent.refunds or intent.disputes):
        return None
    return IntentAt(
        payment_intent=intent.payment_intent,
        session_id=intent.session_id,
        amount_refunded=intent.amount_refunded,
        refunds=intent.refunds,
        disputes=intent.disputes,
    )


def not_taken(intent: IntentAt, session: SessionAt) -> list[str]:
    """What of the intent's facts the session never heard, nor anything newer of."""
    missed = []
    if min(intent.amount_refunded, session.amount) > session.largest_refunded:
        missed.append(f"an amount_refunded of {intent.amount_refunded}")
    for refund_id, refund in intent.refunds.items():
        known = session.refunds.get(refund_id)
        if known is None or later_stage(REFUND_STAGE, known.status, refund.status):
            missed.append(f"refund {refund_id} ({refund.status})")
    for dispute_id, dispute in intent.disputes.items():
        # As the session takes a dispute's news (``newer``): in the same status, more money.
        if newer(session.disputes.get(dispute_id), dispute.status, dispute.amount):
            missed.append(f"dispute {dispute_id} ({dispute.status})")
    return missed


def moved_by(taken_or_given: Any) -> int:
    """Which of ``MOVED`` an account event naming a session is: a restoration with a
    refund's id gives back what a failed refund's clawback took, one without what a
    chargeback took."""
    kind = type(taken_or_given)
    if kind is CreditsClawedBack:
        return 0
    if kind is CreditsReversed:
        return 2
    return 1 if taken_or_given.refund_id else 3


def moved_said(moved: Sequence[int]) -> str:
    """``MOVED``'s figures in words, for a finding."""
    return ", ".join(f"{credits} {said}" for credits, said in zip(moved, _MOVED_SAID, strict=True))
