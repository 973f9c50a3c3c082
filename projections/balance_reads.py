"""Balance reads that arrive together share one query.

While one query for balances is in flight, the accounts asked for meanwhile wait and
go together in the next one: under load a read costs one PostgreSQL round trip per
batch instead of one per request (on these machines a round trip costs the API
process more CPU than everything else a balance read does). Nothing waits for a
timer: a read that finds no query running starts one at once, so a lone read costs
what it did. Each query starts after every read in it arrived, so a batched answer is
never older than a query of its own would have been.
"""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec


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


class BalanceReads:
    """``read(account_id)``: the balances row, or None; see the module."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._asked: dict[str, list[asyncio.Future[BalanceRow | None]]] = {}
        self._querying: asyncio.Task[None] | None = None
        self.queries = 0
        """Queries run so far (a batch of reads is one)."""

    async def read(self, account_id: str) -> BalanceRow | None:
        answer: asyncio.Future[BalanceRow | None] = asyncio.get_running_loop().create_future()
        self._asked.setdefault(account_id, []).append(answer)
        if self._querying is None:
            self._querying = asyncio.create_task(self._query_while_asked())
        return await answer

    async def _query_while_asked(self) -> None:
        batch: dict[str, list[asyncio.Future[BalanceRow | None]]] = {}
        try:
            while self._asked:
                batch, self._asked = self._asked, {}
                self.queries += 1
                try:
                    rows = await self.pool.fetch(_QUERY, list(batch))
                except Exception as error:  # each read gets the failure its own query would
                    _settle(batch, error=error)
                    continue
                found = {row[0]: msgspec.convert(dict(row), BalanceRow) for row in rows}
                _settle(batch, found=found)
        finally:
            self._querying = None
            # Cancelled (shutdown): nobody is left to answer the reads still waiting.
            _settle(batch, error=asyncio.CancelledError())
            _settle(self._asked, error=asyncio.CancelledError())
            self._asked = {}


def _settle(
    batch: dict[str, list[asyncio.Future[BalanceRow | None]]],
    *,
    found: dict[str, BalanceRow] | None = None,
    error: BaseException | None = None,
) -> None:
    for account_id, answers in batch.items():
        for answer in answers:
            if answer.done():  # its reader gave up (a timeout, a closed connection)
                continue
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result((found or {}).get(account_id))
