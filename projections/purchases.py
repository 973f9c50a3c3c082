"""The purchases view: every Checkout session of an account, with its status.

Besides the status, a row keeps what the purchase is still worth: the money
refunded, the credits refunds took back (``credits_clawed_back``) and the
credits disputes hold back (``credits_reversed``: reversed by a chargeback,
restored when it is won or a refund of the same money takes them instead).
The status follows the session's: a dispute does not change it, a refund that fails
makes a purchase refunded in full ``paid`` again.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import msgspec

from ledger.domain.events import (
    CheckoutEvent,
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
from ledger.store.event_store import Connection
from projections.events import EventKinds, Moment, ProjectedEvent, WhichOf, of_kinds
from projections.memory import ViewMemory, fold_remembered
from projections.writes import Write, WritesView

_STATUS_OF: dict[type, str] = {
    CheckoutPaid: "paid",
    CheckoutExpired: "expired",
    CheckoutFailed: "failed",
}
_PAID = ("paid", "refunded")
_SESSION_EVENTS = EventKinds(CheckoutRequested, CheckoutEvent)


class PurchaseRow(msgspec.Struct):
    session_id: str
    stream_id: UUID
    account_id: str
    credits: int
    amount: int
    currency: str
    status: str
    needs_review: bool
    amount_refunded: int
    credits_clawed_back: int
    credits_reversed: int
    position: int
    created_at: Moment
    updated_at: Moment
    paid_at: Moment | None


# The row's fields are the table's columns (and migration 0017's purchase_row, in order).
_COLUMNS = ", ".join(PurchaseRow.__struct_fields__)

# One array of records (migration 0017's purchase_row), as the balances view writes its rows.
_UPSERT = f"""INSERT INTO {{table}} ({_COLUMNS})
    SELECT {_COLUMNS} FROM unnest($1::purchase_row[])
    ON CONFLICT (session_id) DO UPDATE SET
        status = excluded.status, needs_review = excluded.needs_review,
        amount_refunded = excluded.amount_refunded,
        credits_clawed_back = excluded.credits_clawed_back,
        credits_reversed = excluded.credits_reversed,
        updated_at = excluded.updated_at, paid_at = excluded.paid_at"""


_WHICH = WhichOf(
    CheckoutRequested,
    CheckoutPaid,
    CheckoutExpired,
    CheckoutFailed,
    PaymentMismatched,
    PaymentRefunded,
    RefundUpdated,
    DisputeUpdated,
    PaymentDisputed,
    DisputeClosed,
)
_WHICH_EXACT = _WHICH.exact


def fold(row: PurchaseRow | None, projected: ProjectedEvent) -> PurchaseRow | None:
    """The purchase after one event (None while the stream is not a session's)."""
    event = projected.event
    try:  # isinstance() of each class, looked up (see WhichOf): a match asked them in turn
        which = _WHICH_EXACT[type(event)]
    except KeyError:
        which = _WHICH[type(event)]
    if which is CheckoutRequested:
        assert isinstance(event, CheckoutRequested)  # for the type checker: cheap when it is
        return PurchaseRow(
            event.session_id,
            projected.stream_id,
            event.account_id,
            event.credits,
            event.amount,
            event.currency,
            "pending",
            False,
            0,
            0,
            0,
            projected.position,
            projected.recorded_at,
            projected.recorded_at,
            None,
        )
    if row is None:
        return None
    if (status := _STATUS_OF.get(which)) is not None:  # paid, expired, failed
        row.status = status
        if status == "paid" and row.paid_at is None:
            row.paid_at = projected.recorded_at
    elif which is PaymentMismatched:
        # Money arrived but not what was asked: pending until someone looks, even
        # for a session that had expired or failed (money came after all).
        row.status = "pending"
        row.needs_review = True
    elif which is PaymentRefunded:
        assert isinstance(event, PaymentRefunded)
        refunded = event.amount_refunded if event.refunded_now is None else event.refunded_now
        _refunded(row, refunded)
        row.credits_clawed_back += event.credits_clawed_back
        row.credits_reversed -= event.credits_restored
    elif which is RefundUpdated:
        assert isinstance(event, RefundUpdated)
        _refunded(row, event.amount_refunded)
        row.credits_clawed_back += event.credits_clawed_back - event.credits_given_back
        row.credits_reversed += event.credits_reversed - event.credits_restored
    elif which is DisputeUpdated:
        assert isinstance(event, DisputeUpdated)
        if not (event.credits_reversed or event.credits_restored):
            return row
        row.credits_reversed += event.credits_reversed - event.credits_restored
    elif which is PaymentDisputed:
        assert isinstance(event, PaymentDisputed)
        if not event.credits_reversed:
            return row
        row.credits_reversed += event.credits_reversed
    elif which is DisputeClosed:
        assert isinstance(event, DisputeClosed)
        if not event.credits_restored:
            return row
        row.credits_reversed -= event.credits_restored
    else:
        return row
    row.updated_at = projected.recorded_at
    return row


def _refunded(row: PurchaseRow, refunded: int) -> None:
    """Refunded in full, a paid purchase shows ``refunded``; a refund that fails, paid again."""
    row.amount_refunded = refunded
    if row.status in _PAID:
        row.status = "refunded" if refunded >= row.amount else "paid"


class PurchasesProjection(WritesView):
    """What ``GET /v1/credits/purchases`` reads."""

    name = "purchases"
    table = "purchases"

    def __init__(self, memory: ViewMemory[PurchaseRow] | None = None) -> None:
        self.memory = memory if memory is not None else ViewMemory(limit=0)

    async def fold(
        self, connection: Connection, table: str, events: Sequence[ProjectedEvent]
    ) -> list[Write]:
        """A batch folded into the purchases it touches: one read (of those not
        remembered), one write."""
        events = of_kinds(events, _SESSION_EVENTS)
        if not events:
            return []
        written = await fold_remembered(self.memory, connection, table, PurchaseRow, events, fold)
        return [Write(_UPSERT.format(table=table), (written,))] if written else []
