"""The purchases view: every Checkout session of an account, with its status."""

from __future__ import annotations

from ledger.store.event_store import Connection
from projections.events import ProjectedEvent

_STATUS_OF = {
    "CheckoutPaid": "paid",
    "CheckoutExpired": "expired",
    "CheckoutFailed": "failed",
}


class PurchasesProjection:
    """What ``GET /v1/credits/purchases`` reads."""

    name = "purchases"
    table = "purchases"

    async def apply(self, connection: Connection, table: str, event: ProjectedEvent) -> None:
        """Fold one Checkout session event into its purchase row."""
        data = event.data
        if event.type == "CheckoutRequested":
            await connection.execute(
                f"""INSERT INTO {table} (session_id, stream_id, account_id, credits, amount,
                        currency, status, position, created_at, updated_at)
                    VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $8)
""",
                data["session_id"],
                event.stream_id,
                data["account_id"],
                int(data["credits"]),
                int(data["amount"]),
                data["currency"],
                event.position,
                event.recorded_at,
            )
        elif status := _STATUS_OF.get(event.type):
            paid_at = event.recorded_at if status == "paid" else None
            await connection.execute(
                f"""UPDATE {table} SET status = $2, updated_at = $3,
                        paid_at = coalesce(paid_at, $4)
                    WHERE stream_id = $1""",
                event.stream_id,
                status,
                event.recorded_at,
                paid_at,
            )
        elif event.type == "PaymentMismatched":
            # Money arrived but not what was asked: it stays pending until someone looks.
            await connection.execute(
                f"UPDATE {table} SET needs_review = true, updated_at = $2 WHERE stream_id = $1",
                event.stream_id,
                event.recorded_at,
            )
        elif event.type == "PaymentRefunded":
            await connection.execute(
                f"""UPDATE {table} SET amount_refunded = $2,
                        credits_clawed_back = credits_clawed_back + $3,
                        status = CASE WHEN $2 >= amount THEN 'refunded' ELSE status END,
                        updated_at = $4
                    WHERE stream_id = $1""",
                event.stream_id,
                int(data["amount_refunded"]),
                int(data["credits_clawed_back"]),
                event.recorded_at,
            )
