"""The statement view: each credit movement as a ledger line with the balance after it.

One line per event of ``STATEMENT_EVENTS`` (ledger/domain/events.py), which the
audit counts; its ``type`` column is the event's class name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from ledger.domain.events import (
    STATEMENT_EVENTS,
    AccountOpened,
    CreditsSpent,
    MonthlyAllowanceReset,
)
from ledger.store.event_store import Connection
from projections.balance_changes import DESCRIPTIONS, SPENT
from projections.events import EventKinds, ProjectedEvent, as_text, of_kinds
from projections.memory import ViewMemory
from projections.writes import Write

_COLUMNS = [
    "account_id",
    "position",
    "stream_id",
    "version",
    "type",
    "amount",
    "allowance_change",
    "topup_change",
    "allowance_after",
    "topup_after",
    "balance_after",
    "description",
    "recorded_at",
    "granted_change",
    "granted_after",
]


_STATEMENT_EVENTS = EventKinds(*STATEMENT_EVENTS)

# The lines as one array of records (migration 0019's statement_line: the columns above,
# in order), as the balances view writes its rows.
_INSERT = f"""INSERT INTO {{table}} ({", ".join(_COLUMNS)})
    SELECT * FROM unnest($1::statement_line[])"""

LastLine = tuple[str, int, int, int]
"""A stream's last line as the next one needs it: the account and its buckets after it
(allowance, top-up, granted: ``Buckets``' fields, as plain ints: a rebuild folds millions)."""


LAST_LINES = """SELECT line.* FROM unnest($1::uuid[]) AS wanted(stream_id)
    CROSS JOIN LATERAL (
        SELECT stream_id, account_id, allowance_after, topup_after, granted_after
        FROM {table} WHERE stream_id = wanted.stream_id
        ORDER BY version DESC LIMIT 1
    ) AS line"""
"""Each stream's last line, one step down the (stream_id, version) index. (A DISTINCT ON
over ``stream_id = any(...)`` read and sorted every line the streams ever had: a batch
cost as much as its accounts' whole history.)"""


class StatementProjection:
    """What ``GET /v1/credits/transactions`` reads."""

    name = "statement"
    table = "statement_lines"

    def __init__(self, memory: ViewMemory[LastLine] | None = None) -> None:
        self.memory = memory if memory is not None else ViewMemory(limit=0)

    async def fold(
        self, connection: Connection, table: str, events: Sequence[ProjectedEvent]
    ) -> list[Write]:
        """The lines a batch makes, as one insert (one read first, of the last lines of
        the streams not remembered)."""
        lines = await self._lines(connection, table, events)
        return [Write(_INSERT.format(table=table), (lines,))] if lines else []

    async def apply(
        self, connection: Connection, table: str, events: Sequence[ProjectedEvent]
    ) -> None:
        """Append the lines a batch makes with ``COPY``: a rebuild's batches are large."""
        if lines := await self._lines(connection, table, events):
            await connection.copy_records_to_table(table, records=lines, columns=_COLUMNS)

    async def _lines(
        self, connection: Connection, table: str, events: Sequence[ProjectedEvent]
    ) -> list[tuple[Any, ...]]:
        mine = of_kinds(events, _STATEMENT_EVENTS)
        if not mine:
            return []

        async def read(streams: list[UUID]) -> dict[UUID, LastLine]:
            return {
                r["stream_id"]: (
                    r["account_id"],
                    r["allowance_after"],
                    r["topup_after"],
                    r["granted_after"],
                )
                for r in await connection.fetch(LAST_LINES.format(table=table), streams)
            }

        last = await self.memory.rows({e.stream_id for e in mine}, read)
        # Each stream's last line as a list changed in place: a tuple made, stored (the
        # stream's id hashed) and freed a line cost more than the buckets' sums.
        running: dict[UUID, list[Any] | None] = {
            stream: None if at is None else [*at] for stream, at in last.items()
        }
        lines: list[tuple[Any, ...]] = []
        append = lines.append
        descriptions = DESCRIPTIONS.exact
        # change_of() and apply_change() written out on plain ints: a Change and a Buckets
        # an event, read back into the line, cost a rebuild ~5 % of its instructions.
        # description_of() too: two calls a line.
        for projected in mine:
            event = projected.event
            if (known := running[projected.stream_id]) is None:
                if not isinstance(event, AccountOpened):
                    continue  # not an account's stream
                known = running[projected.stream_id] = [event.account_id, 0, 0, 0]
            account_id, allowance, topup, granted = known
            moved = projected.moved
            if moved is None:  # never for STATEMENT_EVENTS (tests/unit/test_projection_folds.py)
                continue
            allowance_change, topup_change, granted_change = moved
            if type(event) is MonthlyAllowanceReset:  # moved: the new allowance
                allowance_change -= allowance
            # Only the buckets that move (most lines move one): each sum is a new int.
            if allowance_change:
                known[1] = allowance = allowance + allowance_change
            if topup_change:
                known[2] = topup = topup + topup_change
            if granted_change:
                known[3] = granted = granted + granted_change
            if type(event) is CreditsSpent:  # nearly every line: its lambda's answer, no call
                description = event.reason or SPENT
            else:
                try:
                    describe = descriptions[type(event)]
                except KeyError:
                    describe = DESCRIPTIONS[type(event)]
                description = describe(event)
            if "\x00" in description:
                description = as_text(description)
            append(
                (
                    account_id,
                    projected.position,
                    projected.stream_id,
                    projected.version,
                    type(event).__name__,
                    allowance_change + granted_change + topup_change,
                    allowance_change,
                    topup_change,
                    allowance,
                    topup,
                    allowance + granted + topup,
                    description,
                    projected.recorded_at,
                    granted_change,
                    granted,
                )
            )
        self.memory.keep(
            {s: None if at is None else (at[0], at[1], at[2], at[3]) for s, at in running.items()}
        )
        return lines
