"""A view's writes for one batch: statements that the live projector sends together.

Under load the projector's batch spent most of its time waiting on PostgreSQL, a round
trip per statement (bench/HISTORY.md): the live projector sends every view's writes of a
batch and the views' new positions as one statement, each write one of its ``WITH``
queries. A rebuild sends them one after another, into its fresh tables.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from ledger.store.event_store import Connection
from projections.events import ProjectedEvent


class Write(NamedTuple):
    """One statement of a view's batch and its arguments."""

    sql: str
    """An ``INSERT`` (``ON CONFLICT …`` allowed) with parameters ``$1`` to ``$n`` for its
    ``n`` arguments and no other ``$`` (``together`` renumbers every ``$<digits>``); or,
    if ``alone``, any statement."""
    args: tuple[Any, ...]
    alone: bool = False
    """Sent as a statement of its own after the others: a ``SELECT`` that must run (an
    unreferenced ``WITH`` query that modifies nothing is never run). On the live
    projector's short road it runs once the batch has committed: it must be one whose
    loss a reader recovers from (a wake-up, after which readers still poll)."""


async def write_each(connection: Connection, writes: Sequence[Write]) -> None:
    """The writes, one statement at a time."""
    for write in writes:
        await connection.execute(write.sql, *write.args)


_PARAMETER = re.compile(r"\$(\d+)")


def together(writes: Sequence[Write], last: Write) -> tuple[Write, list[Write]]:
    """``writes`` as ``WITH`` queries of ``last`` (one statement, one round trip), and
    those to send alone after it.

    Every ``WITH`` query that modifies data runs once, to the end, on the statement's
    snapshot: each view writes a table of its own, and none reads another's rows.
    """
    queries: list[str] = []
    args: list[Any] = []
    for write in (w for w in writes if not w.alone):
        queries.append(f"w{len(queries)} AS ({_shifted(write.sql, len(args))})")
        args.extend(write.args)
    sql = _shifted(last.sql, len(args))
    if queries:
        sql = f"WITH {', '.join(queries)}\n{sql}"
    return Write(sql, (*args, *last.args)), [w for w in writes if w.alone]


def _shifted(sql: str, by: int) -> str:
    return _PARAMETER.sub(lambda m: f"${int(m.group(1)) + by}", sql) if by else sql


class WritesView:
    """A view whose batch is its writes (``fold``); ``apply`` sends them one by one."""

    async def fold(
        self, connection: Connection, table: str, events: Sequence[ProjectedEvent]
    ) -> list[Write]:
        """The writes that fold a batch of events, in commit order, into ``table``."""
        raise NotImplementedError

    async def apply(
        self, connection: Connection, table: str, events: Sequence[ProjectedEvent]
    ) -> None:
        await write_each(connection, await self.fold(connection, table, events))
