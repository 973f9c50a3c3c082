"""What the hosted page's buttons do at "Stripe": payments, charges, and the events they send."""

from __future__ import annotations

import time
from typing import Any

from stripe_standin.cards import TEST_CARD, Card
from stripe_standin.events import Event
from stripe_standin.objects import SessionRecord, complete, expire
from stripe_standin.payments import build_charge, build_payment_intent, card_details
from stripe_standin.state import StandinState

# The delayed method of the hosted page: a bank transfer, settled after the session completes.
BANK_TRANSFER_DETAILS: dict[str, Any] = {"type": "customer_balance", "customer_balance": {}}


def _charge(state: StandinState, record: SessionRecord, now: int, details: dict[str, Any]) -> None:
    payment_intent = state.payment_intents[record.data["payment_intent"]]
    customer = record.data["customer_details"] or {}
    billing = {
        "address": None,
        "email": customer.get("email"),
        "name": customer.get("name"),
        "phone": None,
    }
    charge = build_charge(
        payment_intent, now, payment_method_details=details, billing_details=billing
    )
    state.charges[charge["id"]] = charge


async def pay_session(
    state: StandinState,
    record: SessionRecord,
    *,
    asynchronous: bool = False,
    fail: bool = False,
    card: Card = TEST_CARD,
    email: str | None = None,
) -> list[Event]:
    """Pay an open session; ``asynchronous`` settles after completion (``fail``: it never does).

    ``card`` pays a synchronous payment (a script that names none pays with the test Visa);
    ``email`` is what the customer typed. Every event is delivered (or held) before this
    returns.
    """
    now = int(time.time())
    complete(record, paid=not asynchronous, email=email, name=None if asynchronous else card.name)
    data = record.data
    details = (
        BANK_TRANSFER_DETAILS
        if asynchronous
        else card_details(card.brand, card.last4, card.exp_month, card.exp_year)
    )
    if data["mode"] == "payment":
        payment_intent = build_payment_intent(
            data["payment_intent"],
            int(data["amount_total"] or 0),
            str(data["currency"]),
            record.payment_intent_metadata,
            now,
        )
        state.payment_intents[payment_intent["id"]] = payment_intent
        if not asynchronous:
            _charge(state, record, now, details)
    webhooks = state.webhooks
    events = [await webhooks.publish("checkout.session.completed", record.view())]
    if not asynchronous:
        return events
    if fail:
        state.payment_intents[data["payment_intent"]]["status"] = "requires_payment_method"
        events.append(await webhooks.publish("checkout.session.async_payment_failed", data))
    else:
        data["payment_status"] = "paid"
        _charge(state, record, now, details)
        events.append(await webhooks.publish("checkout.session.async_payment_succeeded", data))
    return events


async def expire_session(state: StandinState, record: SessionRecord) -> list[Event]:
    """Expire an open session now and deliver ``checkout.session.expired``."""
    expire(record)
    return [await state.webhooks.publish("checkout.session.expired", record.view())]
