"""The balances row of an account, read by the API; reads at the same moment share one
query (ledger/store/shared_reads.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from ledger.store.read_connections import Pool
from ledger.store.shared_reads import SharedReads
from projections.balance_changes import Balances


class BalanceRow(msgspec.Struct, Balances, frozen=True):
    """An account's row in the balances view (its ``balance`` and ``available``: ``Balances``)."""

    account_id: str
    monthly_allowance: int
    allowance_remaining: int
    topup_balance: int
    held: int
    period: str
    granted: int


# Only a row that has applied its account's last event: a read right after a write (a
# spend, a hold, a grant, a payment's webhook) found the row as it stood before it while
# the projector had not applied it yet (most of the time, a few milliseconds), and showed
# a balance its caller had just changed. Nor a row of an account with a hold or grant past
# its expiry whose expiry is not recorded yet (the sweeper's second, or for as long as the
# projector or the sweeper is stopped): it counted the grant in `granted` and `available`,
# credits a spend refuses, and the hold in `held`, credits a spend takes. Such a row is
# left out (ledger/store/sql/functions/20_balance_rows.sql): the route answers from the
# write side, which is always current and shows those expiries (api/routes/customers.py).
_QUERY = "SELECT * FROM balance_rows($1::text[], $2)"


def balance_reads(pool: Pool) -> SharedReads[str, BalanceRow]:
    """Balance rows by account id, concurrent reads in one query; none for an account whose
    row has not applied its last event yet, or that has a hold or grant past its expiry."""

    async def fetch_many(connection: Any, account_ids: Sequence[str]) -> dict[str, BalanceRow]:
        # The time of the query, after every read in it was asked (ledger/store/shared_reads.py).
        rows = await connection.fetch(_QUERY, list(account_ids), datetime.now(UTC))
        return {row[0]: msgspec.convert(dict(row), BalanceRow) for row in rows}

    return SharedReads(fetch_many, pool)
