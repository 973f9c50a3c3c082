"""The balances view: one row per account with both buckets and the period."""

from __future__ import annotations

from ledger.store.event_store import Connection
from projections.balance_changes import Buckets, change_of
from projections.events import ProjectedEvent


class BalancesProjection:
    """Current balance per account (what ``GET /v1/credits`` reads)."""

    name = "balances"
    table = "balances"

    async def apply(self, connection: Connection, table: str, event: ProjectedEvent) -> None:
        """Fold one event into its account's row."""
        data = event.data
        if event.type == "AccountOpened":
            allowance = int(data["monthly_allowance"])
            await connection.execute(
                f"""INSERT INTO {table} (account_id, stream_id, monthly_allowance,
                        next_monthly_allowance, allowance_remaining, topup_balance, period,
                        position, updated_at)
                    VALUES ($1, $2, $3, $3, $3, 0, $4, $5, $6)
""",
                data["account_id"],
                event.stream_id,
                allowance,
                data["period"],
                event.position,
                event.recorded_at,
            )
        elif event.type == "MonthlyAllowanceReset":
            await connection.execute(
                f"""UPDATE {table} SET period = $2, monthly_allowance = $3,
                        allowance_remaining = $3, position = $4, updated_at = $5
                    WHERE stream_id = $1""",
                event.stream_id,
                data["period"],
                int(data["monthly_allowance"]),
                event.position,
                event.recorded_at,
            )
        elif event.type == "MonthlyAllowanceChanged":
            await connection.execute(
                f"""UPDATE {table} SET next_monthly_allowance = $2, position = $3, updated_at = $4
                    WHERE stream_id = $1""",
                event.stream_id,
                int(data["monthly_allowance"]),
                event.position,
                event.recorded_at,
            )
        elif change := change_of(event.type, data, Buckets(0, 0)):
            await connection.execute(
                f"""UPDATE {table} SET allowance_remaining = allowance_remaining + $2,
                        topup_balance = topup_balance + $3, position = $4, updated_at = $5
                    WHERE stream_id = $1""",
                event.stream_id,
                change.allowance,
                change.topup,
                event.position,
                event.recorded_at,
            )
