"""Reading the views (the API's read side)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TypeVar
from uuid import UUID

import msgspec

from ledger.store.read_connections import Pool
from projections.balance_reads import BalanceRow, balance_reads

R = TypeVar("R", bound=msgspec.Struct)

_NO_CURSOR = 2**63 - 1
"""Past every position: a first page's ``before``."""

NEWEST_FIRST = f"""SELECT {{columns}} FROM {{table}}
    WHERE account_id = $1 AND position < (SELECT coalesce($2::bigint, {_NO_CURSOR}))
    ORDER BY position DESC LIMIT $3"""
"""A page of an account's rows, newest first, before position $2 (None: the first page).

The cursor is a key of the index the page is read down, from there: written as "$2 IS NULL
OR position < $2", it was a filter in the generic plan PostgreSQL keeps for the statement
on a large store, which read the account's rows from its newest to the cursor (a page
300,000 lines deep: 54-69 ms a call, 0.3-0.7 ms so). Inside ``(SELECT …)`` the planner
sees no value, so every call shares that one plan, for a first page and a deep one alike.
"""


class DueHold(msgspec.Struct, frozen=True):
    """An open hold past its expiry, as the sweeper needs it."""

    account_id: str
    hold_id: str


class DueGrant(msgspec.Struct, frozen=True):
    """An active grant past its expiry, as the sweeper needs it."""

    account_id: str
    grant_id: str


class GrantLine(msgspec.Struct, frozen=True):
    """A grant as the grants view shows it; ``remaining`` includes what open holds reserve.

    A grant closed (``expired`` or ``voided``) while an open hold reserves part of it keeps
    that part in ``remaining``, and in the balance's ``granted``, until the hold settles.
    """

    grant_id: str
    amount: int
    remaining: int
    priority: int
    expires_at: datetime | None
    reason: str
    status: str
    granted_at: datetime
    closed_at: datetime | None
    position: int


_GRANT_STATUS = "(CASE WHEN status = 'active' AND expires_at <= $5 THEN 'expired' ELSE status END)"
"""A grant's status at ``$5`` (a time, or null: as the view has it)."""
_GRANT_COLUMNS = [
    f"{_GRANT_STATUS} AS status" if name == "status" else name
    for name in GrantLine.__struct_fields__
]


class PurchaseRow(msgspec.Struct, frozen=True):
    """A purchase as customers see it."""

    session_id: str
    credits: int
    amount: int
    currency: str
    status: str
    needs_review: bool
    credits_clawed_back: int
    credits_reversed: int
    """Held back by a chargeback still open or lost (a refund's are ``credits_clawed_back``)."""
    position: int
    created_at: datetime
    updated_at: datetime
    paid_at: datetime | None


class PendingPurchase(msgspec.Struct, frozen=True):
    """A purchase still pending, as reconciliation needs it."""

    session_id: str
    account_id: str
    credits: int
    created_at: datetime


class ViewPosition(msgspec.Struct, frozen=True):
    """How far one view has applied the store."""

    name: str
    position: int
    updated_at: datetime | None
    lag_seconds: float
    """Age of the oldest event the view has not applied yet (0 when caught up)."""


class StatementLine(msgspec.Struct, frozen=True):
    """One ledger line with the balance after it."""

    position: int
    type: str
    amount: int
    allowance_change: int
    topup_change: int
    granted_change: int
    allowance_after: int
    topup_after: int
    granted_after: int
    balance_after: int
    description: str
    recorded_at: datetime


class Views:
    """Queries on the projected tables."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.balance_reads = balance_reads(pool)

    async def balance(self, account_id: str) -> BalanceRow | None:
        """The projected balance, or None if the projector has not seen the account yet, or
        not its last event (reads at the same moment share one query:
        ledger/store/shared_reads.py)."""
        return await self.balance_reads.read(account_id)

    async def left_to_the_write_side(self, account_ids: Sequence[str], now: datetime) -> set[str]:
        """Of these accounts, those whose row a balance read at ``now`` leaves out (see
        ``balance_rows``): behind its account's last event, or counting a hold or grant
        past its expiry that the views do not show expired yet."""
        rows = await self.pool.fetch(
            "SELECT account_id FROM balance_rows($1::text[], $2)", list(account_ids), now
        )
        return set(account_ids) - {row[0] for row in rows}

    async def balances_page(self, *, after: str | None, limit: int) -> list[BalanceRow]:
        """Accounts in the balances view by id, the ``limit`` after ``after``."""
        rows = await self.pool.fetch(
            f"""SELECT {", ".join(BalanceRow.__struct_fields__)}
               FROM balances WHERE $1::text IS NULL OR account_id > $1
               ORDER BY account_id LIMIT $2""",
            after,
            limit,
        )
        return [BalanceRow(**dict(row)) for row in rows]

    async def positions(self, names: Sequence[str]) -> list[ViewPosition]:
        """Each view's position, in ``names`` order (0 for one that never ran)."""
        rows = await self.pool.fetch(
            """SELECT n.name, coalesce(p.position, 0) AS position, p.updated_at,
                      coalesce(extract(epoch FROM clock_timestamp() - (
                          SELECT e.recorded_at FROM stored_events e
                          WHERE e.notification_id > coalesce(p.position, 0)
                          ORDER BY e.notification_id LIMIT 1)), 0)::float8 AS lag_seconds
               FROM unnest($1::text[]) WITH ORDINALITY AS n(name, i)
               LEFT JOIN projection_positions p USING (name)
               ORDER BY n.i""",
            list(names),
        )
        return [
            ViewPosition(
                name=row["name"],
                position=int(row["position"]),
                updated_at=row["updated_at"],
                lag_seconds=max(float(row["lag_seconds"]), 0.0),
            )
            for row in rows
        ]

    async def due_holds(
        self, now: datetime, limit: int, *, skipping: Collection[str] = ()
    ) -> list[DueHold]:
        """Open holds that reached their expiry, soonest first, but of the accounts skipped."""
        rows = await self.pool.fetch(
            """SELECT b.account_id, h.hold_id FROM holds h JOIN balances b USING (stream_id)
               WHERE h.status = 'held' AND h.expires_at <= $1
                 AND b.account_id <> ALL($3::text[])
               ORDER BY h.expires_at LIMIT $2""",
            now,
            limit,
            list(skipping),
        )
        return [DueHold(**dict(row)) for row in rows]

    async def due_grants(
        self, now: datetime, limit: int, *, skipping: Collection[str] = ()
    ) -> list[DueGrant]:
        """Active grants that reached their expiry, soonest first, but of the accounts skipped."""
        rows = await self.pool.fetch(
            """SELECT b.account_id, g.grant_id FROM grants g JOIN balances b USING (stream_id)
               WHERE g.status = 'active' AND g.expires_at <= $1
                 AND b.account_id <> ALL($3::text[])
               ORDER BY g.expires_at LIMIT $2""",
            now,
            limit,
            list(skipping),
        )
        return [DueGrant(**dict(row)) for row in rows]

    async def grants(
        self,
        stream_id: UUID,
        status: str,
        *,
        limit: int,
        before: int | None = None,
        now: datetime | None = None,
    ) -> list[GrantLine]:
        """The grants of an account's stream of a status (or ``all``), newest first.

        With ``now``, an active grant past its expiry then is listed (and filtered) as
        ``expired``, with no ``closed_at``, before the sweeper records it so: its
        ``remaining`` is still the view's, what its expiry will leave is the write side's."""
        rows = await self.pool.fetch(
            f"""SELECT {", ".join(_GRANT_COLUMNS)} FROM grants
                WHERE stream_id = $1 AND position < (SELECT coalesce($3::bigint, {_NO_CURSOR}))
                  AND ($2 = 'all' OR {_GRANT_STATUS} = $2)
                ORDER BY position DESC LIMIT $4""",
            stream_id,
            status,
            before,
            limit,
            now,
        )
        return [GrantLine(**dict(row)) for row in rows]

    async def wait_for_stream(self, view: str, stream_id: UUID) -> bool:
        """Wait until ``view`` has applied the last event of a stream (its own writes, for a
        caller that just wrote); False if it has not within a second."""
        deadline = time.monotonic() + 1.0
        # Looked every 5 ms, a view held back (a projector stopped, or waiting behind a long
        # transaction) made each request ask 200 times in its second; the pause grows to
        # 50 ms, some 25 looks.
        pause = 0.005
        while True:
            behind = await self.pool.fetchval(
                """SELECT coalesce(max(e.notification_id), 0) >
                          coalesce((SELECT position FROM projection_positions WHERE name = $2), 0)
                   FROM (SELECT notification_id FROM stored_events WHERE originator_id = $1
                         ORDER BY originator_version DESC LIMIT 1) e""",
                stream_id,
                view,
            )
            if not behind:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, 0.05)

    async def purchases(
        self, account_id: str, *, limit: int, before: int | None = None
    ) -> list[PurchaseRow]:
        """Newest first; ``before`` is the position of the last one already seen."""
        return await self._newest_first("purchases", PurchaseRow, account_id, limit, before)

    async def pending_purchases(
        self,
        *,
        created_after: datetime | None,
        created_before: datetime,
        account_id: str | None = None,
        limit: int = 1000,
    ) -> list[PendingPurchase]:
        """Pending purchases created in that window (of one account, if given), oldest first."""
        rows = await self.pool.fetch(
            """SELECT session_id, account_id, credits, created_at FROM purchases
               WHERE status = 'pending' AND created_at <= $2
                 AND ($1::timestamptz IS NULL OR created_at >= $1)
                 AND ($3::text IS NULL OR account_id = $3)
               ORDER BY created_at LIMIT $4""",
            created_after,
            created_before,
            account_id,
            limit,
        )
        return [PendingPurchase(**dict(row)) for row in rows]

    async def statement(
        self, account_id: str, *, limit: int, before: int | None = None
    ) -> list[StatementLine]:
        """Newest first; ``before`` is the position of the last line already seen."""
        return await self._newest_first("statement_lines", StatementLine, account_id, limit, before)

    async def _newest_first(
        self, table: str, row_type: type[R], account_id: str, limit: int, before: int | None
    ) -> list[R]:
        rows = await self.pool.fetch(
            NEWEST_FIRST.format(columns=", ".join(row_type.__struct_fields__), table=table),
            account_id,
            before,
            limit,
        )
        return [row_type(**dict(row)) for row in rows]
