"""The purchases view: every Checkout session of an account, with its status."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import msgspec

from ledger.store.event_store import Connection
from projections.events import ProjectedEvent

_STATUS_OF = {
    "CheckoutPaid": "paid",
    "CheckoutExpired": "expired",
    "CheckoutFailed": "failed",
}

_COLUMNS = (
    "session_id, stream_id, account_id, credits, amount, currency, status, needs_review, "
    "amount_refunded, credits_clawed_back, position, created_at, updated_at, paid_at"
)


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
    position: int
    created_at: datetime
    updated_at: datetime
    paid_at: datetime | None


def fold(row: PurchaseRow | None, event: ProjectedEvent) -> PurchaseRow | None:
    """The purchase after one event (None while the stream is not a session's)."""
    data = event.data
    if event.type == "CheckoutRequested":
        return PurchaseRow(
            str(data["session_id"]),
            event.stream_id,
            str(data["account_id"]),
            int(data["credits"]),
            int(data["amount"]),
            str(data["currency"]),
            "pending",
            False,
            0,
            0,
            event.position,
            event.recorded_at,
            event.recorded_at,
            None,
        )
    if row is None:
        return None
    if status := _STATUS_OF.get(event.type):
        row.status = status
        if status == "paid" and row.paid_at is None:
            row.paid_at = event.recorded_at
    elif event.type == "PaymentMismatched":
        # Money arrived but not what was asked: it stays pending until someone looks.
        row.needs_review = True
    elif event.type == "PaymentRefunded":
        row.amount_refunded = int(data["amount_refunded"])
        row.credits_clawed_back += int(data["credits_clawed_back"])
        if row.amount_refunded >= row.amount:
            row.status = "refunded"
    else:
        return row
    row.updated_at = event.recorded_at
    return row


class PurchasesProjection:
    """What ``GET /v1/credits/purchases`` reads."""

    name = "purchases"
    table = "purchases"

    async def apply(
        self, connection: Connection, table: str, events: Sequence[ProjectedEvent]
    ) -> None:
        """Fold a batch into the purchases it touches: one read, one write."""
        streams = list({e.stream_id for e in events})
        rows: dict[UUID, PurchaseRow | None] = {
            r["stream_id"]: PurchaseRow(**dict(r))
            for r in await connection.fetch(
                f"SELECT {_COLUMNS} FROM {table} WHERE stream_id = any($1)", streams
            )
        }
        for event in events:
            rows[event.stream_id] = fold(rows.get(event.stream_id), event)
        placeholders = ", ".join(f"${n}" for n in range(1, 15))
        await connection.executemany(
            f"""INSERT INTO {table} ({_COLUMNS}) VALUES ({placeholders})
                ON CONFLICT (session_id) DO UPDATE SET
                    status = excluded.status, needs_review = excluded.needs_review,
                    amount_refunded = excluded.amount_refunded,
                    credits_clawed_back = excluded.credits_clawed_back,
                    updated_at = excluded.updated_at, paid_at = excluded.paid_at""",
            [msgspec.structs.astuple(row) for row in rows.values() if row is not None],
        )
