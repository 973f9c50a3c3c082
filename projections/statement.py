"""The statement view: each credit movement as a ledger line with the balance after it."""

from __future__ import annotations

from ledger.store.event_store import Connection
from projections.balance_changes import Buckets, apply_change, change_of
from projections.events import ProjectedEvent


class StatementProjection:
    """What ``GET /v1/credits/transactions`` reads."""

    name = "statement"
    table = "statement_lines"

    async def apply(self, connection: Connection, table: str, event: ProjectedEvent) -> None:
        """Append the line this event makes, if it moves credits."""
        previous = await connection.fetchrow(
            f"""SELECT account_id, allowance_after, topup_after FROM {table}
                WHERE stream_id = $1 ORDER BY version DESC LIMIT 1""",
            event.stream_id,
        )
        if previous is None:
            if event.type != "AccountOpened":
                return  # not an account's stream
            account_id, before = str(event.data["account_id"]), Buckets(0, 0)
        else:
            account_id = previous["account_id"]
            before = Buckets(previous["allowance_after"], previous["topup_after"])
        change = change_of(event.type, event.data, before)
        if change is None:
            return
        after = apply_change(before, change)
        await connection.execute(
            f"""INSERT INTO {table} (account_id, position, stream_id, version, type, amount,
                    allowance_change, topup_change, allowance_after, topup_after, balance_after,
                    description, recorded_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
""",
            account_id,
            event.position,
            event.stream_id,
            event.version,
            event.type,
            change.amount,
            change.allowance,
            change.topup,
            after.allowance,
            after.topup,
            after.balance,
            change.description,
            event.recorded_at,
        )
