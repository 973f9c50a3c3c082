"""Reconciliation: what Stripe knows about pending Checkout sessions, applied as webhooks are.

Webhooks can be missed: an outage longer than Stripe's retries, a wrong signing
secret for a day. Stripe recommends asking it now and then as well. For each
session the ledger still has as pending, this asks the payment provider how it
stands (``CheckoutLookup``) and applies what it finds through the same road as a
delivery (``Ledger.apply_payment_event``), under an event id of its own
(``reconcile:<session id>:<state>``): a state found twice is applied once, and a
webhook that arrives afterwards changes nothing, because the session is paid or
closed already.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime

import msgspec

from ledger.domain.checkout import PENDING
from ledger.ports import CheckoutLookup, PaymentGatewayError
from ledger.service import Ledger
from ledger.store.event_store import ConcurrencyConflict
from ledger.store.repository import UnreadableStream

log = logging.getLogger(__name__)


class PendingCheckout(msgspec.Struct, frozen=True, kw_only=True):
    """A session the read side lists as pending."""

    session_id: str
    account_id: str
    credits: int
    created_at: datetime


class Reconciled(msgspec.Struct, frozen=True, kw_only=True):
    """What became of one pending session.

    ``found``: the provider's state (``open``, ``processing``, ``paid``, ``failed``,
    ``expired``, ``unknown``; empty when it was not asked). ``outcome``:

    - ``credited``, ``expired``, ``failed``, ``mismatched``: the session was
      pending and is now that (``mismatched``: paid another amount, recorded, not
      credited) — a webhook had been missed;
    - ``unchanged``: nothing to apply (the session is open or a delayed payment is
      under way at the provider, or the provider does not know it);
    - ``settled``: the ledger had settled it already (the read side was behind);
    - ``error``: the provider could not be asked, the session was busy (its turn did
      not come), or its stream or its account's cannot be loaded; ``detail`` says which.
    """

    session_id: str
    account_id: str
    credits: int
    found: str
    outcome: str
    detail: str = ""

    @property
    def changed(self) -> bool:
        return self.outcome in ("credited", "expired", "failed", "mismatched")


_OUTCOME_OF_STATUS = {"paid": "credited", "mismatched": "mismatched"}


async def reconcile(
    ledger: Ledger,
    lookup: CheckoutLookup,
    pending: Iterable[PendingCheckout],
    on_each: Callable[[Reconciled], None] | None = None,
) -> list[Reconciled]:
    """Ask the provider about each pending session, one at a time; apply what it says
    (``on_each`` is told each result as it comes: the command's progress bar)."""
    results = []
    for checkout in pending:
        results.append(await reconcile_one(ledger, lookup, checkout))
        if on_each is not None:
            on_each(results[-1])
    return results


async def reconcile_one(
    ledger: Ledger, lookup: CheckoutLookup, checkout: PendingCheckout
) -> Reconciled:
    """Reconcile one session (see ``reconcile``)."""
    try:
        return await _reconcile_one(ledger, lookup, checkout)
    except UnreadableStream as error:
        # Passed over, as a busy one: listed oldest first, it ended every run before the
        # later sessions were asked about, for as long as it stayed.
        log.error(
            "reconcile: %s passed over: %s (see `ledger audit verify`)", checkout.session_id, error
        )
        return Reconciled(
            session_id=checkout.session_id,
            account_id=checkout.account_id,
            credits=checkout.credits,
            found="",
            outcome="error",
            detail=str(error),
        )


async def _reconcile_one(
    ledger: Ledger, lookup: CheckoutLookup, checkout: PendingCheckout
) -> Reconciled:
    def result(found: str, outcome: str, detail: str = "") -> Reconciled:
        return Reconciled(
            session_id=checkout.session_id,
            account_id=checkout.account_id,
            credits=checkout.credits,
            found=found,
            outcome=outcome,
            detail=detail,
        )

    before = await ledger.session(checkout.session_id, fresh=True)
    if before is None or before.status != PENDING:
        return result("", "settled", before.status if before else "not in the store")
    try:
        found = await lookup.look_up_checkout(checkout.session_id)
    except PaymentGatewayError as error:
        log.warning("reconcile: could not ask about %s: %s", checkout.session_id, error)
        return result("", "error", str(error))
    if found.meaning is None or found.event_type is None:
        return result(found.state, "unchanged")
    try:
        await ledger.apply_payment_event(found.meaning.event_id, found.event_type, found.meaning)
    except ConcurrencyConflict:  # its turn did not come: the others need not wait for it
        log.warning("reconcile: %s was busy; the next run tries again", checkout.session_id)
        return result(found.state, "error", "busy: the next run tries again")
    after = await ledger.session(checkout.session_id, fresh=True)
    status = after.status if after is not None else PENDING
    if status == PENDING:
        return result(found.state, "unchanged")
    outcome = _OUTCOME_OF_STATUS.get(status, status)
    log.warning(
        "reconcile: %s (account %s, %s credits) was %s at Stripe but still pending here "
        "(a webhook was missed): %s now",
        checkout.session_id,
        checkout.account_id,
        checkout.credits,
        found.state,
        outcome,
    )
    return result(found.state, outcome)
