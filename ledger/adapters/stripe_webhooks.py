"""Stripe webhook deliveries: signature verified with the SDK, payload read with msgspec."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import msgspec
from stripe import SignatureVerificationError, Webhook, WebhookSignature

from ledger.payment_events import (
    CheckoutChange,
    CheckoutEvent,
    DisputeEvent,
    PaymentEvent,
    RefundEvent,
    RefundUpdate,
)
from ledger.ports import FoundCheckout

log = logging.getLogger(__name__)

_CHECKOUT_CHANGES = {
    "checkout.session.completed": CheckoutChange.COMPLETED,
    "checkout.session.async_payment_succeeded": CheckoutChange.PAYMENT_SUCCEEDED,
    "checkout.session.async_payment_failed": CheckoutChange.PAYMENT_FAILED,
    "checkout.session.expired": CheckoutChange.EXPIRED,
}

# Every dispute event carries the dispute as it stands; its status says what it means
# (ledger/domain/adjustments.py), whichever of these delivered it.
_DISPUTE_EVENTS = frozenset(
    {
        "charge.dispute.created",
        "charge.dispute.updated",
        "charge.dispute.closed",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.funds_reinstated",
    }
)

# Every refund event carries the refund as it stands: its id, amount and status (a failed
# one returned no money, ledger/domain/adjustments.py). ``refund.*`` since API version
# 2024-10-28; ``charge.refund.updated`` before and since.
_REFUND_EVENTS = frozenset(
    {"charge.refund.updated", "refund.created", "refund.updated", "refund.failed"}
)

ACTED_ON = frozenset({*_CHECKOUT_CHANGES, "charge.refunded", *_REFUND_EVENTS, *_DISPUTE_EVENTS})
"""The event types the ledger reads ``data.object`` of; any other is answered 200 and
applied to nothing, with or without a ``data`` (a type added later, a thin event)."""

STRIPE_ID_MAX = 255
"""Stripe's ids are at most 255 characters (its API upgrades guide). The ledger keys claims
and views on them, and PostgreSQL's btree indexes refuse a key of a few kilobytes."""

DIGITS_MAX = 19
"""The most digits a number Stripe writes as text is read with: more than any amount, count
or time it sends, or the ledger keeps (a bigint); int() refuses a text of over 4,300 (a
signed event carrying one was a 500)."""

MARK_KEY, MARK_VALUE = "made_by", "credit-ledger"
"""The metadata entry of every session the ledger makes (stripe_gateway.py). A paid session
the ledger never recorded is credited from its metadata only if it carries it: another
product on the same Stripe account may use the same keys, and its sessions are not ours."""

# "no_payment_required" happens with 100 % discounts: nothing to collect, still fulfilled.
_PAID_STATUSES = ("paid", "no_payment_required")


# What construct_event() uses; verify_header() alone checks no age unless told.
SIGNATURE_TOLERANCE_SECONDS = Webhook.DEFAULT_TOLERANCE


class InvalidWebhook(Exception):
    """The delivery is not a verifiable Stripe event, or not one the ledger can keep: record
    nothing (the webhook answers 400 to a signature that fails, 200 to a verified body)."""


class StripeEventEnvelope(msgspec.Struct):
    """The parts of a Stripe event every type shares."""

    id: str
    type: str
    livemode: Any = None
    """True for live mode, False for test mode (None: not said, as in reconciliation's)."""
    account: Any = None
    """The connected account whose object it is (Stripe Connect); None for the platform's."""


class _StripeObject(msgspec.Struct):
    """The fields of ``data.object`` the ledger reads, of a session, a charge, a refund or a
    dispute, each as sent (a string, a number, an expanded object): ``_text``, ``_id`` and
    ``_integer`` judge them. Decoded typed, the object's other fields are skipped, not made
    into a dict."""

    id: Any = None
    payment_status: Any = None
    payment_intent: Any = None
    amount_total: Any = None
    currency: Any = None
    metadata: Any = None
    url: Any = None
    expires_at: Any = None
    amount_refunded: Any = None
    status: Any = None
    amount: Any = None


class _EventData(msgspec.Struct):
    object_: _StripeObject | None = msgspec.field(default=None, name="object")


class _EventWithObject(StripeEventEnvelope):
    """An event whose ``data`` is absent, null or an object, and whose ``data.object`` is too.
    Any other shape fails its decoding, and the event is read as ``StripeEventEnvelope``."""

    data: _EventData | None = None
    """``{"object": ...}``; needed only by the types the ledger acts on (``ACTED_ON``)."""


def verify_signature(payload: bytes, signature_header: str | None, secrets: Sequence[str]) -> None:
    """Check ``Stripe-Signature`` on the raw body against each configured secret.

    Several secrets cover a rollover on our side; several ``v1`` signatures in one
    header cover Stripe's (the SDK accepts any that matches). Tolerance: 300 s.
    """
    if not signature_header:
        raise InvalidWebhook("missing Stripe-Signature header")
    if not signature_header.isascii():  # the SDK's comparison raises TypeError on one
        raise InvalidWebhook("the Stripe-Signature header is not ASCII")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidWebhook("the body is not UTF-8") from None
    for secret in secrets:
        try:
            WebhookSignature.verify_header(
                text, signature_header, secret, tolerance=SIGNATURE_TOLERANCE_SECONDS
            )
        except SignatureVerificationError:
            continue
        return
    raise InvalidWebhook("no signature matches a configured secret, or it is too old")


# A JSON-escaped NUL (an odd number of backslashes, then u0000): PostgreSQL text cannot hold it.
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _holds_escaped_nul(payload: bytes) -> bool:
    # The pattern tries every position of the body (21 µs for a 657-byte event); the
    # plain search, 0.4 µs, rules out nearly every event before it. find(), not ``in``:
    # bytes' ``in`` tries its operand as an integer first and formats a TypeError.
    return payload.find(b"\\u0000") != -1 and _ESCAPED_NUL.search(payload) is not None


def parse_event(
    payload: bytes, livemode: bool | None = None
) -> tuple[StripeEventEnvelope, PaymentEvent | None]:
    """The event's envelope and what it means to the ledger (None: not ours to act on).

    With ``livemode`` (the mode of the service's Stripe key), an event of the other mode
    means nothing, nor does a connected account's: a test payment costs nothing, and a
    paid session the ledger never recorded is credited from its metadata, so a test-mode
    or Connect event reaching this endpoint (a test secret listed beside the live one, a
    Connect endpoint) must not credit an account.
    """
    if _holds_escaped_nul(payload):
        raise InvalidWebhook("the event contains a NUL character")
    envelope, obj = _decode(payload)
    if obj is None and envelope.type in ACTED_ON:
        raise InvalidWebhook("the event has no data.object")
    _check_id(envelope.id)
    if (elsewhere := _elsewhere(envelope, livemode)) is not None:
        log.warning("ignoring Stripe event %s (%s): %s", envelope.id, envelope.type, elsewhere)
        return envelope, None
    # Not ours to act on without an object, whatever the event carries: 200, as for every one.
    return envelope, _meaning(envelope, obj) if obj is not None else None


def _decode(payload: bytes) -> tuple[StripeEventEnvelope, _StripeObject | None]:
    """The envelope and its ``data.object`` (None: absent, null or not an object)."""
    try:
        try:
            event = _EVENT_WITH_OBJECT.decode(payload)
        except msgspec.ValidationError:
            # A ``data`` or ``data.object`` of another shape (or a bad envelope: said again).
            return _ENVELOPE.decode(payload), None
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as error:
        raise InvalidWebhook(f"not a Stripe event: {error}") from None
    return event, event.data.object_ if event.data is not None else None


_EVENT_WITH_OBJECT = msgspec.json.Decoder(_EventWithObject)
_ENVELOPE = msgspec.json.Decoder(StripeEventEnvelope)


def _elsewhere(envelope: StripeEventEnvelope, livemode: bool | None) -> str | None:
    """Why the event is not about this ledger's payments (None: it is)."""
    if envelope.account is not None:
        return f"an event of the connected account {envelope.account!r}"
    said = envelope.livemode
    if livemode is not None and isinstance(said, bool) and said != livemode:
        mode = {True: "live", False: "test"}
        return f"a {mode[said]}-mode event, and the service's Stripe key is {mode[livemode]}-mode"
    return None


def _meaning(envelope: StripeEventEnvelope, obj: _StripeObject) -> PaymentEvent | None:
    if change := _CHECKOUT_CHANGES.get(envelope.type):
        return _checkout_event(envelope.id, change, obj)
    if envelope.type == "charge.refunded":
        intent = _id(obj.payment_intent)
        refunded = _integer(obj.amount_refunded)
        if intent and refunded is not None:
            return RefundEvent(
                event_id=envelope.id, payment_intent=intent, amount_refunded=refunded
            )
        return None
    if envelope.type in _REFUND_EVENTS:
        intent = _id(obj.payment_intent)
        refund_id = _id(obj.id)
        status = _text(obj.status)
        amount = _integer(obj.amount)
        if not intent or not refund_id or not status or amount is None:
            return None
        return RefundUpdate(
            event_id=envelope.id,
            refund_id=refund_id,
            payment_intent=intent,
            amount=amount,
            status=status,
        )
    if envelope.type in _DISPUTE_EVENTS:
        intent = _id(obj.payment_intent)
        dispute_id = _id(obj.id)
        status = _text(obj.status)
        if not intent or not dispute_id or not status:
            return None
        return DisputeEvent(
            event_id=envelope.id,
            dispute_id=dispute_id,
            payment_intent=intent,
            status=status,
            amount=_integer(obj.amount),
        )
    return None


def _checkout_event(event_id: str, change: CheckoutChange, obj: _StripeObject) -> CheckoutEvent:
    # A value of the usual kind (an id or a text as a string, an amount or a time as an
    # int, or null) is taken here; any other is judged by _id, _text and _integer, as
    # every value was. A call of theirs a field cost about 1k instructions, thirteen of
    # them half of a paid delivery's parse (callgrind, bench/spend_instructions.py).
    session_id, intent = obj.id, obj.payment_intent
    if not (type(session_id) is str and 0 < len(session_id) <= STRIPE_ID_MAX):
        session_id = _id(session_id)
        if not session_id:
            raise InvalidWebhook("the checkout session has no id")
    if not (intent is None or (type(intent) is str and 0 < len(intent) <= STRIPE_ID_MAX)):
        intent = _id(intent)
    total, currency, url, expires_at = obj.amount_total, obj.currency, obj.url, obj.expires_at
    metadata = obj.metadata if isinstance(obj.metadata, dict) else {}
    account_id, credits = metadata.get("account_id"), metadata.get("credits")
    unit_amount, price_currency = metadata.get("unit_amount"), metadata.get("currency")
    return CheckoutEvent(
        event_id=event_id,
        change=change,
        session_id=session_id,
        paid=obj.payment_status in _PAID_STATUSES,
        payment_intent=intent or None,
        amount_total=total if type(total) is int and total >= 0 else _integer(total),
        currency=currency if type(currency) is str and currency else _text(currency),
        account_id=account_id if type(account_id) is str and account_id else _text(account_id),
        credits=(  # metadata's values are strings
            int(credits)
            if type(credits) is str
            and len(credits) <= DIGITS_MAX
            and credits.isascii()
            and credits.isdigit()
            else _integer(credits)
        ),
        checkout_url=None if url is None else _text(url),
        expires_at=(
            expires_at if type(expires_at) is int and expires_at >= 0 else _integer(expires_at)
        ),
        unit_amount=None if unit_amount is None else _integer(unit_amount),
        price_currency=(
            price_currency
            if type(price_currency) is str and price_currency
            else _text(price_currency)
        ),
        marked=metadata.get(MARK_KEY) == MARK_VALUE,
    )


def _text(value: Any) -> str | None:
    if isinstance(value, dict):  # an expanded object
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _id(value: Any) -> str | None:
    """An object's id, read as ``_text`` reads it."""
    found = _text(value)
    if found is not None:
        _check_id(found)
    return found


def _check_id(value: str) -> None:
    if len(value) > STRIPE_ID_MAX:
        raise InvalidWebhook(f"an id is longer than Stripe's {STRIPE_ID_MAX} characters")


def _integer(value: Any) -> int | None:
    """An amount, a count or a time: Stripe sends none below zero, and one would be read as
    money flowing back (a dispute of -500 restored 500 credits never taken)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if (
        isinstance(value, str)
        and len(value) <= DIGITS_MAX
        and value.isascii()
        and value.isdigit()  # not '²'
    ):
        return int(value)
    return None


# A delayed payment that failed leaves its session "complete" and "unpaid", and its
# payment intent back at one of these (Stripe's docs on delayed notification methods).
_FAILED_INTENT_STATUSES = ("requires_payment_method", "canceled")

RECONCILE_EVENT_PREFIX = "reconcile"
"""Event ids of what reconciliation finds: ``reconcile:<session id>:<state>``."""


def found_checkout(session: dict[str, Any], intent_status: str | None = None) -> FoundCheckout:
    """What a Checkout session retrieved from Stripe amounts to.

    The state the session is in becomes the event Stripe would have delivered for
    it (``checkout.session.completed``, ``…expired``, ``…async_payment_failed``),
    read by ``parse_event`` exactly as a delivery is, under the event id
    ``reconcile:<session id>:<state>``: the same state found twice is one event,
    applied once. ``intent_status`` is the payment intent's, needed only for a
    session that is complete and unpaid (a delayed payment under way, or failed).
    """
    session_id = _text(session.get("id"))
    if not session_id:
        raise InvalidWebhook("the checkout session has no id")
    state, event_type = _state_of(session, intent_status)
    if event_type is None:
        return FoundCheckout(session_id=session_id, state=state)
    event_id = f"{RECONCILE_EVENT_PREFIX}:{session_id}:{state}"
    payload = msgspec.json.encode(
        {"id": event_id, "object": "event", "type": event_type, "data": {"object": session}}
    )
    envelope, meaning = parse_event(payload)
    return FoundCheckout(
        session_id=session_id, state=state, event_type=envelope.type, meaning=meaning
    )


def _state_of(session: dict[str, Any], intent_status: str | None) -> tuple[str, str | None]:
    status = session.get("status")
    if status == "expired":
        return "expired", "checkout.session.expired"
    if status != "complete":
        return str(status or "unknown"), None
    if session.get("payment_status") in _PAID_STATUSES:
        return "paid", "checkout.session.completed"
    if intent_status in _FAILED_INTENT_STATUSES:
        return "failed", "checkout.session.async_payment_failed"
    return "processing", None
