"""Reading the views (the API's read side)."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec


class BalanceRow(msgspec.Struct, frozen=True):
    """An account's row in the balances view."""

    account_id: str
    monthly_allowance: int
    allowance_remaining: int
    topup_balance: int
    period: str

    @property
    def balance(self) -> int:
        return self.allowance_remaining + self.topup_balance


class PurchaseRow(msgspec.Struct, frozen=True):
    """A purchase as customers see it."""

    session_id: str
    credits: int
    amount: int
    currency: str
    status: str
    needs_review: bool
    credits_clawed_back: int
    position: int
    created_at: datetime
    updated_at: datetime
    paid_at: datetime | None


class StatementLine(msgspec.Struct, frozen=True):
    """One ledger line with the balance after it."""

    position: int
    type: str
    amount: int
    allowance_change: int
    topup_change: int
    allowance_after: int
    topup_after: int
    balance_after: int
    description: str
    recorded_at: datetime


class Views:
    """Queries on the projected tables."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def balance(self, account_id: str) -> BalanceRow | None:
        """The projected balance, or None if the projector has not seen the account yet."""
        row = await self.pool.fetchrow(
            """SELECT account_id, monthly_allowance, allowance_remaining, topup_balance, period
               FROM balances WHERE account_id = $1""",
            account_id,
        )
        return None if row is None else BalanceRow(**dict(row))

    async def purchases(
        self, account_id: str, *, limit: int, before: int | None = None
    ) -> list[PurchaseRow]:
        """Newest first; ``before`` is the position of the last one already seen."""
        rows = await self.pool.fetch(
            f"""SELECT {", ".join(PurchaseRow.__struct_fields__)} FROM purchases
                WHERE account_id = $1 AND ($2::bigint IS NULL OR position < $2)
                ORDER BY position DESC LIMIT $3""",
            account_id,
            before,
            limit,
        )
        return [PurchaseRow(**dict(row)) for row in rows]

    async def statement(
        self, account_id: str, *, limit: int, before: int | None = None
    ) -> list[StatementLine]:
        """Newest first; ``before`` is the position of the last line already seen."""
        rows = await self.pool.fetch(
            f"""SELECT {", ".join(StatementLine.__struct_fields__)} FROM statement_lines
                WHERE account_id = $1 AND ($2::bigint IS NULL OR position < $2)
                ORDER BY position DESC LIMIT $3""",
            account_id,
            before,
            limit,
        )
        return [StatementLine(**dict(row)) for row in rows]
