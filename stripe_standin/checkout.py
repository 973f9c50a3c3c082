"""What the hosted page's buttons do at "Stripe": payments, charges, and the events they send."""

from __future__ import annotations

import time

from stripe_standin.events import Event
from stripe_standin.objects import SessionRecord, complete, expire
from stripe_standin.payments import build_charge, build_payment_intent
from stripe_standin.state import StandinState


def _charge(state: StandinState, record: SessionRecord, now: int) -> None:
    payment_intent = state.payment_intents[record.data["payment_intent"]]
    charge = build_charge(payment_intent, now)
    state.charges[charge["id"]] = charge


async def pay_session(
    state: StandinState, record: SessionRecord, *, asynchronous: bool = False, fail: bool = False
) -> list[Event]:
    """Pay an open session; ``asynchronous`` settles after completion (``fail``: it never does).

    Every event is delivered before this returns.
    """
    now = int(time.time())
    complete(record, paid=not asynchronous)
    data = record.data
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
            _charge(state, record, now)
    webhooks = state.webhooks
    events = [await webhooks.publish("checkout.session.completed", record.view())]
    if not asynchronous:
        return events
    if fail:
        state.payment_intents[data["payment_intent"]]["status"] = "requires_payment_method"
        events.append(await webhooks.publish("checkout.session.async_payment_failed", data))
    else:
        data["payment_status"] = "paid"
        _charge(state, record, now)
        events.append(await webhooks.publish("checkout.session.async_payment_succeeded", data))
    return events


async def expire_session(state: StandinState, record: SessionRecord) -> list[Event]:
    """Expire an open session now and deliver ``checkout.session.expired``."""
    expire(record)
    return [await state.webhooks.publish("checkout.session.expired", record.view())]
