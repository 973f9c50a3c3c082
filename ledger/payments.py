"""Payments: what Stripe reports becomes events on the session and the account, once."""

from __future__ import annotations

import hashlib
import logging

from eventsourcing.domain import Aggregate

from ledger.domain.account import CreditAccount
from ledger.domain.checkout import MISMATCHED, CheckoutSession
from ledger.domain.ids import account_stream_id, checkout_stream_id
from ledger.payment_events import (
    CheckoutChange,
    CheckoutEvent,
    DisputeClosedEvent,
    DisputeOpenedEvent,
    PaymentEvent,
    RefundEvent,
)
from ledger.purchases import Pricing
from ledger.repository import Repository, retry_on_conflict
from ledger.store.group_commit import IdempotencyRecord
from ledger.store.idempotency import IdempotencyKeyTaken, IdempotencyStore, StoredAnswer

log = logging.getLogger(__name__)


STRIPE_EVENT_SCOPE = "stripe-event"
PAYMENT_INTENT_SCOPE = "payment-intent"


class Decision:
    """What one Stripe event changes: aggregates to save and a payment intent to link."""

    def __init__(self, *aggregates: Aggregate, link: tuple[str, str] | None = None) -> None:
        self.aggregates = aggregates
        self.link = link

    def keys(self, event_id: str, event_type: str) -> list[IdempotencyRecord]:
        """The Stripe event's id, and the payment intent's link to its session."""
        keys = [_event_key(event_id, event_type)]
        if self.link is not None:
            intent, session_id = self.link
            keys.append(
                IdempotencyRecord(
                    PAYMENT_INTENT_SCOPE, intent, StoredAnswer(b"", session_id.encode())
                )
            )
        return keys


NOTHING = Decision()


class PaymentService:
    """Applies payment events: exactly once per Stripe event and per session outcome.

    Exactly-once rests on the store, not on a check: the session's and the
    account's expected versions are appended in one (group-committed) command
    that also claims the Stripe event id as a key, so a duplicate or concurrent
    delivery either conflicts (and re-decides on fresh state, finding nothing
    left to do) or finds its event id taken.
    """

    def __init__(
        self,
        repository: Repository,
        pricing: Pricing,
        idempotency: IdempotencyStore,
    ) -> None:
        self.repository = repository
        self.pricing = pricing
        self.idempotency = idempotency

    async def apply(self, event: PaymentEvent, event_type: str) -> bool:
        """Apply one verified event; a repeat of an applied event changes nothing.

        A repeat is recognised when its command claims the event id already taken
        (atomically with any events), not by a look beforehand. Returns False for
        a repeat.
        """
        try:
            await retry_on_conflict(lambda: self._apply_once(event, event_type))
        except IdempotencyKeyTaken:
            return False  # this event was applied before (or concurrently, first)
        return True

    async def record_ignored(self, event_id: str, event_type: str) -> bool:
        """Remember an event the ledger does not act on, so it is skipped if redelivered.

        Returns False when it was remembered already.
        """
        try:
            await self.repository.commit(keys=[_event_key(event_id, event_type)])
        except IdempotencyKeyTaken:
            return False
        return True

    async def _apply_once(self, event: PaymentEvent, event_type: str) -> None:
        decision = await self._decide(event)
        await self.repository.commit(
            *decision.aggregates, keys=decision.keys(event.event_id, event_type)
        )

    async def _decide(self, event: PaymentEvent) -> Decision:
        match event:
            case CheckoutEvent():
                return await self._decide_checkout(event)
            case RefundEvent():
                return await self._decide_refund(event)
            case DisputeOpenedEvent():
                return await self._decide_dispute_opened(event)
            case DisputeClosedEvent():
                return await self._decide_dispute_closed(event)
        raise AssertionError(f"unhandled payment event {event!r}")

    async def _decide_checkout(self, event: CheckoutEvent) -> Decision:
        session = await self.repository.get(CheckoutSession, checkout_stream_id(event.session_id))
        fulfils = event.paid and event.change in (
            CheckoutChange.COMPLETED,
            CheckoutChange.PAYMENT_SUCCEEDED,
        )
        if session is None:
            if not fulfils:
                log.info("ignoring %s for unknown session %s", event.change, event.session_id)
                return NOTHING
            session = self._recover_session(event)
            if session is None:
                return NOTHING
        if event.change is CheckoutChange.EXPIRED:
            return Decision(session) if session.expire() else NOTHING
        if event.change is CheckoutChange.PAYMENT_FAILED:
            return Decision(session) if session.fail() else NOTHING
        if not fulfils:  # completed, but a delayed payment method has not paid yet
            return NOTHING
        return await self._fulfil(session, event)

    async def _fulfil(self, session: CheckoutSession, event: CheckoutEvent) -> Decision:
        account = await self._account(session.account_id)
        if account is None:
            log.error(
                "paid session %s names account %s, which does not exist: not credited",
                session.session_id,
                session.account_id,
            )
            return NOTHING
        credits = session.pay(
            payment_intent=event.payment_intent,
            amount_paid=event.amount_total if event.amount_total is not None else -1,
            currency=event.currency or "",
        )
        if credits == 0:
            if session.status == MISMATCHED and session.pending_events:
                log.error(
                    "session %s paid %s %s for %s credits (asked %s %s): recorded, not credited",
                    session.session_id,
                    event.amount_total,
                    event.currency,
                    session.credits,
                    session.amount,
                    session.currency,
                )
            return Decision(session) if session.pending_events else NOTHING
        account.purchase(session_id=session.session_id, credits=credits)
        link = (event.payment_intent, session.session_id) if event.payment_intent else None
        return Decision(session, account, link=link)

    def _recover_session(self, event: CheckoutEvent) -> CheckoutSession | None:
        """A paid session the store never saw (its append failed): rebuild it from metadata."""
        if not event.account_id or not event.credits or event.credits <= 0:
            log.error(
                "paid session %s is unknown and its metadata names no account and credits",
                event.session_id,
            )
            return None
        log.warning(
            "paid session %s was never recorded (its CheckoutRequested is missing): "
            "crediting it from its metadata (account %s, %s credits)",
            event.session_id,
            event.account_id,
            event.credits,
        )
        return CheckoutSession(
            session_id=event.session_id,
            account_id=event.account_id,
            credits=event.credits,
            amount=event.credits * self.pricing.unit_amount,
            currency=self.pricing.currency,
            checkout_url=event.checkout_url or "",
            expires_at=event.expires_at or 0,
            recovered=True,
        )

    async def _decide_refund(self, event: RefundEvent) -> Decision:
        found = await self._session_and_account(event.payment_intent)
        if found is None:
            return NOTHING
        session, account = found
        credits = session.refund(event.amount_refunded)
        account.claw_back(session_id=session.session_id, credits=credits)
        return Decision(session, account)

    async def _decide_dispute_opened(self, event: DisputeOpenedEvent) -> Decision:
        found = await self._session_and_account(event.payment_intent)
        if found is None:
            return NOTHING
        session, account = found
        credits = session.open_dispute_case(event.dispute_id)
        account.reverse_for_dispute(session.session_id, event.dispute_id, credits)
        return Decision(session, account)

    async def _decide_dispute_closed(self, event: DisputeClosedEvent) -> Decision:
        found = await self._session_and_account(event.payment_intent)
        if found is None:
            return NOTHING
        session, account = found
        credits = session.close_dispute_case(event.dispute_id, won=event.won)
        account.restore_after_dispute(session.session_id, event.dispute_id, credits)
        return Decision(session, account)

    async def _session_and_account(
        self, payment_intent: str
    ) -> tuple[CheckoutSession, CreditAccount] | None:
        link = await self.idempotency.find(PAYMENT_INTENT_SCOPE, payment_intent)
        session_id = link.response.decode() if link is not None else None
        if session_id is None:
            log.info("payment intent %s paid no session of ours: ignored", payment_intent)
            return None
        session = await self.repository.get(CheckoutSession, checkout_stream_id(session_id))
        account = await self._account(session.account_id) if session else None
        if session is None or account is None:
            log.error("payment intent %s links to a missing session or account", payment_intent)
            return None
        return session, account

    async def _account(self, account_id: str) -> CreditAccount | None:
        return await self.repository.get(CreditAccount, account_stream_id(account_id))


def _event_key(event_id: str, event_type: str) -> IdempotencyRecord:
    return IdempotencyRecord(
        STRIPE_EVENT_SCOPE,
        event_id,
        StoredAnswer(hashlib.sha256(event_type.encode()).digest(), b""),
    )
