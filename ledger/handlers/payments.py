"""Deciding Stripe's events: payments, expiries, failures, refunds and disputes, once each.

Every event is claimed by its Stripe event id in the commit that applies it, so a
redelivery changes nothing. What an event changes does not depend on the order
they come in: a refund or a dispute of a payment not linked to a session yet is
kept on its payment intent's stream and applied when the payment lands
(ledger/domain/payment_intent.py); what they take back is computed from the
facts, not from the sequence (ledger/domain/adjustments.py).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate

from ledger.commands import ApplyPaymentEvent
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import MISMATCHED, Adjustment, CheckoutSession
from ledger.domain.ids import account_stream_id, checkout_stream_id, payment_intent_stream_id
from ledger.domain.limits import MAX_CHECKOUT_AMOUNT
from ledger.domain.payment_intent import PaymentIntent
from ledger.handlers.expiries import expire_due
from ledger.payment_events import (
    CheckoutChange,
    CheckoutEvent,
    DisputeEvent,
    PaymentEvent,
    RefundEvent,
    RefundUpdate,
)
from ledger.store.claims import Claim, StoredAnswer
from ledger.store.commit import ClaimRecord
from ledger.unit_of_work import Decision, Handler, Streams

log = logging.getLogger(__name__)

STRIPE_EVENT_SCOPE = "stripe-event"
LINK_SCOPE = "payment-intent"
"""A payment intent's first sighting, claimed once: the session whose payment links it, or
"" when a refund or dispute that came first opened the intent's stream. A payment and a
refund that race both claim it, so the second is decided again (ledger/domain/payment_intent.py).
Before payment intents had streams, every link was such a claim."""


RECOVERED_CREDITS_LIMIT = 1_000_000_000
"""The most a session rebuilt from its metadata may credit: far above any purchase (the
ledger's limit, now and before), and far below what the views' integers hold."""


class Received(msgspec.Struct, frozen=True):
    """What became of a Stripe event: ``applied`` False for a repeat of one handled before."""

    applied: bool


class PaymentState(msgspec.Struct):
    """The streams a Stripe event may change.

    A Struct, not a dataclass: made once a delivery, in a fifth of the instructions."""

    session: CheckoutSession | None = None
    account: CreditAccount | None = None
    intent: PaymentIntent | None = None
    linked_to: str | None = None
    """The session a payment intent with no stream is linked to, as its claim says: looked up
    for a payment only when it is decided again (the first attempt leaves it to the commit)."""
    changed: list[Aggregate] = msgspec.field(default_factory=list)
    keys: list[ClaimRecord] = msgspec.field(default_factory=list)
    at: datetime | None = None
    """The command's time: the account's expiries due then are recorded before it changes."""
    expiries_recorded: bool = False


async def load_payment(streams: Streams, command: ApplyPaymentEvent) -> PaymentState:
    """The session, its account and its payment intent, as far as the event leads to them."""
    event = command.meaning
    state = PaymentState()
    if event is None:
        return state
    if not (
        isinstance(event, CheckoutEvent)
        and event.account_id
        and await _load_checkout_at_once(streams, event, state)
    ):
        await _load_in_turn(streams, event, state)
    if (
        isinstance(event, CheckoutEvent)
        and event.payment_intent
        and state.intent is None
        and streams.fresh
    ):
        state.linked_to = await _linked_session(streams, event.payment_intent)
    return state


async def _load_in_turn(streams: Streams, event: PaymentEvent, state: PaymentState) -> None:
    """The intent, then the session it or the event names, then that session's account."""
    intent_id = event.payment_intent
    if intent_id:
        state.intent = await streams.get(PaymentIntent, payment_intent_stream_id(intent_id))
    session_id: str | None
    if isinstance(event, CheckoutEvent):
        session_id = event.session_id
    elif state.intent is not None:
        session_id = state.intent.session_id
    else:
        session_id = await _linked_session(streams, intent_id) if intent_id else None
    if session_id:
        state.session = await streams.get(CheckoutSession, checkout_stream_id(session_id))
    account_id = (
        state.session.account_id
        if state.session is not None
        else event.account_id
        if isinstance(event, CheckoutEvent)
        else None
    )
    if account_id:
        state.account = await streams.get(CreditAccount, account_stream_id(account_id))


async def _linked_session(streams: Streams, payment_intent: str) -> str | None:
    """The session the intent's link claim names (None for none, or a refund's empty one)."""
    link = await streams.claim(LINK_SCOPE, payment_intent)
    if link is None:
        return None
    return link.response.decode() or None


def decide_payment(state: PaymentState, command: ApplyPaymentEvent) -> Decision[Received]:
    """Apply the event to whichever streams it changes (none: just remember its id)."""
    state.at = command.at
    match command.meaning:
        case CheckoutEvent() as event:
            _checkout(state, event, command)
        case RefundEvent() as event:
            if _linked(state, event.payment_intent):
                assert state.session is not None
                _adjust(state, state.session.refund(event.amount_refunded))
            else:
                intent = _intent(state, event.payment_intent)
                intent.hold_refund(event.amount_refunded)
        case RefundUpdate() as event:
            if _linked(state, event.payment_intent):
                assert state.session is not None
                _adjust(
                    state,
                    state.session.update_refund(event.refund_id, event.amount, event.status),
                )
            else:
                intent = _intent(state, event.payment_intent)
                intent.hold_refund_update(event.refund_id, event.amount, event.status)
        case DisputeEvent() as event:
            if _linked(state, event.payment_intent):
                assert state.session is not None
                _dispute(state, state.session, event.dispute_id, event.status, event.amount)
            else:
                intent = _intent(state, event.payment_intent)
                intent.hold_dispute(event.dispute_id, event.status, event.amount)
    # A settled session is not kept in memory: after its payment, its events (a refund, a
    # dispute, a redelivery) are rare, and keeping it cost a paid delivery a copy and check
    # of its state (942.9k -> 927.8k instructions, bench/spend_instructions.py --webhook).
    session = state.session
    not_kept = (session,) if session is not None and session.settled else ()
    return Decision(Received(applied=True), state.changed, state.keys, not_kept=not_kept)


_FULFILLING = (CheckoutChange.COMPLETED, CheckoutChange.PAYMENT_SUCCEEDED)
_EXPIRED, _PAYMENT_FAILED = CheckoutChange.EXPIRED, CheckoutChange.PAYMENT_FAILED
"""Read once: in CPython 3.11 an enum's member read from its class goes through the
enum type's ``__getattr__`` (~900 instructions), four times a paid delivery."""


def _checkout(state: PaymentState, event: CheckoutEvent, command: ApplyPaymentEvent) -> None:
    fulfils = event.paid and event.change in _FULFILLING
    session = state.session
    # A session never recorded is credited from its metadata only if the ledger marked it
    # as its own: another product on the same Stripe account may use the same keys.
    unmarked = session is None and not event.marked
    if session is None:
        if not fulfils:
            log.info("ignoring %s for unknown session %s", event.change, event.session_id)
            return
        session = _recovered_session(event, command)
        if session is None:
            return
        state.session = session
    if event.change is _EXPIRED:
        session.expire()
    elif event.change is _PAYMENT_FAILED:
        session.fail()
    elif fulfils:
        _fulfil(state, session, event, unmarked=unmarked)
        return
    state.changed.append(session)


def _fulfil(
    state: PaymentState, session: CheckoutSession, event: CheckoutEvent, *, unmarked: bool
) -> None:
    account = state.account
    if account is None:
        log.error(
            "paid session %s names account %s, which does not exist: not credited",
            session.session_id,
            session.account_id,
        )
        return
    settled_before = session.settled
    credits = session.pay(
        payment_intent=event.payment_intent,
        amount_paid=event.amount_total if event.amount_total is not None else -1,
        currency=event.currency or "",
        for_review=unmarked,
    )
    if credits:
        _expiries_first(state, account)
        account.purchase(session_id=session.session_id, credits=credits)
    elif unmarked and session.pending_events:
        log.error(
            "paid session %s was never recorded and its metadata lacks the ledger's mark: "
            "recorded for review, not credited (account %s, %s credits)",
            session.session_id,
            session.account_id,
            session.credits,
        )
    elif session.status == MISMATCHED and session.pending_events:
        log.error(
            "session %s paid %s %s for %s credits (asked %s %s): recorded, not credited",
            session.session_id,
            event.amount_total,
            event.currency,
            session.credits,
            session.amount,
            session.currency,
        )
    state.changed += [session, account]
    if event.payment_intent and session.settled:
        _link(state, session, event.payment_intent, settled_now=not settled_before)


def _link(
    state: PaymentState, session: CheckoutSession, payment_intent: str, *, settled_now: bool
) -> None:
    """Name the session on its payment intent's stream, if a refund or dispute opened one
    (and apply what they left there); else claim the intent's link for the session, once,
    when the payment settles it."""
    intent = state.intent
    if intent is None:
        if settled_now and state.linked_to is None:
            state.keys.append(_link_key(payment_intent, session.session_id))
        # A link to this very session: another process paid it meanwhile, and this decision
        # (on a copy not paid yet) conflicts. Only a link to another session is news.
        elif settled_now and state.linked_to != session.session_id:
            log.warning(
                "payment intent %s paid session %s already: session %s is credited, not linked",
                payment_intent,
                state.linked_to,
                session.session_id,
            )
        return
    if not intent.link(session.session_id):
        return
    state.changed.append(intent)
    # The refunds known by id first: one that failed then takes nothing the figure would.
    for refund_id, refund in intent.refunds.items():
        _adjust(state, session.update_refund(refund_id, refund.amount, refund.status))
    _adjust(state, session.refund(intent.amount_refunded))
    for dispute_id, dispute in intent.disputes.items():
        _dispute(state, session, dispute_id, dispute.status, dispute.amount)


def _dispute(
    state: PaymentState, session: CheckoutSession, dispute_id: str, status: str, amount: int | None
) -> None:
    # No amount said: of the money the refunds leave, whichever they turn out to be. The whole
    # charge says so (adjustments.py caps a chargeback at what refunds leave); what they left
    # when the dispute came did not, once a refund that came before it failed.
    disputed = amount if amount is not None else session.amount
    _adjust(state, session.dispute(dispute_id, status, disputed))


def _adjust(state: PaymentState, adjustment: Adjustment) -> None:
    """Take back or give back on the account what the session's refund or dispute says."""
    session, account = state.session, state.account
    assert session is not None
    if account is None:
        log.error("session %s names a missing account: not adjusted", session.session_id)
        return
    if (
        adjustment.clawed_back
        or adjustment.reversed
        or adjustment.restored
        or adjustment.given_back
    ):
        _expiries_first(state, account)
    account.claw_back(session.session_id, adjustment.clawed_back)
    account.restore_after_refund(session.session_id, adjustment.refund_id, adjustment.given_back)
    account.reverse_for_dispute(session.session_id, adjustment.dispute_id, adjustment.reversed)
    account.restore_after_dispute(session.session_id, adjustment.dispute_id, adjustment.restored)
    for changed in (session, account):
        if not any(known is changed for known in state.changed):
            state.changed.append(changed)


def _expiries_first(state: PaymentState, account: CreditAccount) -> None:
    """Record the account's expiries due at the command's time before its credits change,
    as every command that changes them does: the notifications of the payment (and the
    alerts it sets off) count no hold or grant past its expiry, as a balance read then."""
    if not state.expiries_recorded:
        state.keys += expire_due(account, state.at)
        state.expiries_recorded = True


def _linked(state: PaymentState, payment_intent: str) -> bool:
    """Whether the payment intent paid a session the ledger has (and its account)."""
    if state.session is None:
        return False
    if state.account is None:
        log.error("payment intent %s links to a session whose account is missing", payment_intent)
    return True


def _intent(state: PaymentState, payment_intent: str) -> PaymentIntent:
    """The payment intent's stream, to keep an event that came before its payment."""
    if state.intent is None:
        log.info("payment intent %s paid no session the ledger knows yet: kept", payment_intent)
        state.intent = PaymentIntent.record(payment_intent)
        state.keys.append(_link_key(payment_intent, ""))
    state.changed.append(state.intent)
    return state.intent


def _link_key(payment_intent: str, session_id: str) -> ClaimRecord:
    return ClaimRecord(Claim(LINK_SCOPE, payment_intent, b""), session_id.encode())


async def _load_checkout_at_once(
    streams: Streams, event: CheckoutEvent, state: PaymentState
) -> bool:
    """The intent, the session and the account its metadata names, in one round trip;
    False if the session turns out to belong to another account (then loaded in turn).

    On the first attempt the intent is presumed to have no stream, and not read: almost
    every payment comes before any refund or dispute of it, and its intent has none. Not
    even its stream id is made then (a uuid5 of an intent never seen before, 2 % of a paid
    delivery's in-process instructions, bench/spend_instructions.py --webhook), so an
    intent held in memory is presumed so too, and costs a second attempt on the rare
    payment that comes after its refund. The link claim guards the presumption. A refund or
    dispute that opens an intent's stream claims its link in the same commit, and a
    payment that settles its session with no intent stream claims the link too
    (``_link``): the claim taken, the payment is decided again on a fresh load, as when
    the refund lands a moment after the read. A payment that settles nothing does nothing
    with the intent, stream or not (the payment that settled it linked it).
    """
    assert event.account_id is not None
    wanted: list[tuple[type[Any], UUID]] = [
        (CheckoutSession, checkout_stream_id(event.session_id)),
        (CreditAccount, account_stream_id(event.account_id)),
    ]
    if event.payment_intent and streams.fresh:
        wanted.append((PaymentIntent, payment_intent_stream_id(event.payment_intent)))
    session, account, *intent = await streams.get_many(*wanted)
    if session is not None and session.account_id != event.account_id:
        return False
    state.session, state.account = session, account
    state.intent = intent[0] if intent else None
    return True


def _recovered_session(event: CheckoutEvent, command: ApplyPaymentEvent) -> CheckoutSession | None:
    """A paid session the store never saw (its append failed): rebuilt from its metadata
    (and credited only if the ledger marked it as its own)."""
    if (
        not event.account_id
        or not event.credits
        or not 0 < event.credits <= RECOVERED_CREDITS_LIMIT
    ):
        log.error(
            "paid session %s is unknown and its metadata names no account and credits (of 1 to %s)",
            event.session_id,
            RECOVERED_CREDITS_LIMIT,
        )
        return None
    if event.marked:
        log.warning(
            "paid session %s was never recorded (its CheckoutRequested is missing): "
            "crediting it from its metadata (account %s, %s credits)",
            event.session_id,
            event.account_id,
            event.credits,
        )
    unit_amount, currency = _price_made_at(event, command)
    return CheckoutSession.request(
        session_id=event.session_id,
        account_id=event.account_id,
        credits=event.credits,
        amount=event.credits * unit_amount,
        currency=currency,
        checkout_url=event.checkout_url or "",
        expires_at=event.expires_at or 0,
        recovered=True,
    )


def _price_made_at(event: CheckoutEvent, command: ApplyPaymentEvent) -> tuple[int, str]:
    """The price and currency a session never recorded is rebuilt at: the price its
    metadata names if that is in the service's currency and no less than the service's
    price now (a price lowered since it was made: it paid more a credit), else the
    service's. Its mark and metadata are anyone's to write who makes sessions on the Stripe
    account (another integration, a teammate's test): a session paid below the service's
    price, or in another currency, is recorded as a mismatch and credits nothing, as does one
    made before a price rise (someone looks). Taken whatever it said, the metadata's price
    credited a session paid at 1 a credit when a credit cost 100, or paid in yen."""
    made_at = event.unit_amount
    if made_at is None or made_at == command.unit_amount:
        return command.unit_amount, command.currency
    made_in = (event.price_currency or command.currency).lower()
    if command.unit_amount < made_at <= MAX_CHECKOUT_AMOUNT and made_in == command.currency.lower():
        return made_at, command.currency
    log.warning(
        "paid session %s was never recorded and its metadata names a price of %s %s a credit, "
        "not at least the service's %s %s: rebuilt at the service's",
        event.session_id,
        made_at,
        made_in,
        command.unit_amount,
        command.currency,
    )
    return command.unit_amount, command.currency


def event_claim(command: ApplyPaymentEvent) -> Claim:
    """A Stripe event is applied once: its id is claimed with what it changed."""
    return Claim(STRIPE_EVENT_SCOPE, command.event_id, _type_fingerprint(command.event_type))


@functools.lru_cache(maxsize=1024)
def _type_fingerprint(event_type: str) -> bytes:
    """The SHA-256 of an event type, the fingerprint of its event's claim: kept for the few
    types Stripe sends (each hashed afresh cost a paid delivery ~5k instructions, callgrind),
    bounded for the verified types no one foresaw."""
    return hashlib.sha256(event_type.encode()).digest()


def received_before(_: StoredAnswer, __: ApplyPaymentEvent) -> Received:
    return Received(applied=False)


def by_payment(command: ApplyPaymentEvent) -> str:
    """Events of one session (or one payment intent) take turns in a process."""
    match command.meaning:
        case CheckoutEvent() as event:
            return f"checkout/{event.session_id}"
        case RefundEvent() | RefundUpdate() | DisputeEvent() as event:
            return f"payment-intent/{event.payment_intent}"
    return f"stripe-event/{command.event_id}"


HANDLERS: dict[type, Handler] = {  # type: ignore[type-arg]
    ApplyPaymentEvent: Handler(
        Received, by_payment, load_payment, decide_payment, event_claim, received_before
    ),
}
