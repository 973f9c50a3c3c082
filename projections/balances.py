"""The balances view: one row per account with its three buckets (allowance, grants, top-ups),
what is held and the period."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import msgspec

from ledger.domain.events import (
    AccountEvent,
    AccountOpened,
    MonthlyAllowanceChanged,
    MonthlyAllowanceReset,
)
from ledger.store.event_store import Connection
from projections.balance_changes import HELD, HELD_EXACT
from projections.events import EventKinds, Moment, ProjectedEvent, WhichOf, of_kinds
from projections.memory import ViewMemory, fold_remembered
from projections.writes import Write, WritesView


class BalanceRow(msgspec.Struct):
    account_id: str
    stream_id: UUID
    monthly_allowance: int
    next_monthly_allowance: int
    allowance_remaining: int
    topup_balance: int
    held: int
    period: str
    position: int
    updated_at: Moment
    granted: int = 0


# The row's fields are the table's columns (and migration 0016's balance_row, in order).
_COLUMNS = ", ".join(BalanceRow.__struct_fields__)


_WHICH = WhichOf(AccountOpened, MonthlyAllowanceChanged)
_WHICH_EXACT = _WHICH.exact


def fold(row: BalanceRow | None, projected: ProjectedEvent) -> BalanceRow | None:
    """The row after one event (None while the stream is not an account's)."""
    event = projected.event
    try:  # isinstance() of each class, looked up (see WhichOf)
        which = _WHICH_EXACT[type(event)]
    except KeyError:
        which = _WHICH[type(event)]
    if which is AccountOpened:
        assert isinstance(event, AccountOpened)  # for the type checker: cheap when it is
        allowance = event.monthly_allowance
        return BalanceRow(
            event.account_id,
            projected.stream_id,
            allowance,
            allowance,
            allowance,
            0,
            0,
            event.period,
            projected.position,
            projected.recorded_at,
        )
    if row is None:
        return None
    if which is MonthlyAllowanceChanged:
        assert isinstance(event, MonthlyAllowanceChanged)
        row.next_monthly_allowance = event.monthly_allowance
    else:
        if (moved := projected.moved) is None:
            return row
        allowance, topup, granted = moved
        if type(event) is MonthlyAllowanceReset:  # moved: the new allowance
            row.period, row.monthly_allowance = event.period, event.monthly_allowance
            allowance -= row.allowance_remaining
        # Only the buckets that move: a Struct's attribute set costs ~300 instructions, and
        # most events move one bucket (a spend, its allowance).
        if allowance:
            row.allowance_remaining += allowance
        if topup:
            row.topup_balance += topup
        if granted:
            row.granted += granted
        try:  # HELD[type(event)], in the plain dict first
            held = HELD_EXACT[type(event)]
        except KeyError:
            held = HELD[type(event)]
        if held is not None:
            row.held += held(event)
    row.position, row.updated_at = projected.position, projected.recorded_at
    return row


_ACCOUNT_EVENTS = EventKinds(AccountOpened, AccountEvent)

# The rows as one array of records (migration 0016's balance_row, BalanceRow's fields in
# order): asyncpg checks each element of an array parameter in Python, so eleven arrays
# of columns cost it about five times as much.
_UPSERT = f"""INSERT INTO {{table}} ({_COLUMNS})
    SELECT {_COLUMNS} FROM unnest($1::balance_row[])
    ON CONFLICT (account_id) DO UPDATE SET
        monthly_allowance = excluded.monthly_allowance,
        next_monthly_allowance = excluded.next_monthly_allowance,
        allowance_remaining = excluded.allowance_remaining,
        topup_balance = excluded.topup_balance, held = excluded.held,
        granted = excluded.granted,
        period = excluded.period,
        position = excluded.position, updated_at = excluded.updated_at"""


class BalancesProjection(WritesView):
    """Current balance per account (what ``GET /v1/credits`` reads)."""

    name = "balances"
    table = "balances"

    def __init__(self, memory: ViewMemory[BalanceRow] | None = None) -> None:
        self.memory = memory if memory is not None else ViewMemory(limit=0)

    async def fold(
        self, connection: Connection, table: str, events: Sequence[ProjectedEvent]
    ) -> list[Write]:
        """A batch folded into the rows it touches: one read (of those not remembered),
        one write."""
        events = of_kinds(events, _ACCOUNT_EVENTS)
        if not events:
            return []
        written = await fold_remembered(self.memory, connection, table, BalanceRow, events, fold)
        # One statement for every row, not one execution a row: under load a projector
        # batch holds a few dozen accounts.
        return [Write(_UPSERT.format(table=table), (written,))] if written else []
