"""The balances row of an account, read by the API; reads at the same moment share one
query (ledger/store/shared_reads.py)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from ledger.store.shared_reads import SharedReads


class BalanceRow(msgspec.Struct, frozen=True):
    """An account's row in the balances view."""

    account_id: str
    monthly_allowance: int
    allowance_remaining: int
    topup_balance: int
    held: int
    period: str
    granted: int

    @property
    def balance(self) -> int:
        return self.allowance_remaining + self.granted + self.topup_balance

    @property
    def available(self) -> int:
        return self.balance - self.held


_QUERY = f"""SELECT {", ".join(BalanceRow.__struct_fields__)}
             FROM balances WHERE account_id = any($1::text[])"""


def balance_reads(pool: asyncpg.Pool) -> SharedReads[str, BalanceRow]:
    """Balance rows by account id, concurrent reads in one query."""

    async def fetch_many(account_ids: Sequence[str]) -> dict[str, BalanceRow]:
        rows = await pool.fetch(_QUERY, list(account_ids))
        return {row[0]: msgspec.convert(dict(row), BalanceRow) for row in rows}

    return SharedReads(fetch_many)
