"""A view's rows as the live projector last committed them, so its next batch need not
read them back.

Under a steady load nearly every batch touches accounts the batches before it touched:
reading their rows (balances, the alerts' state, each statement's last line) cost the
projector a round trip per view, and its PostgreSQL as much again as the writes. A
purchase's row is written when the customer asks to buy and again, minutes later, when
Stripe says it is paid: the purchases remember theirs too.

The memory is right only while this projector is the view's only writer. The runner
(``projections/runner.py``) keeps it honest: it remembers the ``xmin`` of the view's
position row after each batch it commits, and forgets everything when the row is not
as it left it (another projector applied a batch, a rebuild swapped the table in) or
when a batch fails (the rows in memory may have been folded past what committed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from itertools import islice
from typing import Any, Generic, TypeVar
from uuid import UUID

import msgspec

from ledger.store.event_store import Connection
from projections.events import ProjectedEvent

Row = TypeVar("Row")
StructRow = TypeVar("StructRow", bound=msgspec.Struct)

LIMIT = 20_000
"""Streams remembered per view (a balances row costs about 450 bytes: some 9 MB; a
purchase about 640: some 13 MB); beyond it the least recently written are dropped, and
read again when they come back."""


class ViewMemory(Generic[Row]):
    """Rows by stream, ``None`` for a stream known to have none. With ``limit=0`` it keeps
    nothing: a view's memory when it is not the live projector's (tests, a rebuild)."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self.written_at: tuple[int, int] | None = None
        """The view's position and its position row's ``xmin`` when the rows were kept."""
        self._rows: dict[UUID, Row | None] = {}

    def recall(self, streams: Iterable[UUID]) -> tuple[dict[UUID, Row | None], list[UUID]]:
        """The rows remembered of ``streams``, and the streams to read."""
        known: dict[UUID, Row | None] = {}
        unknown: list[UUID] = []
        for stream in streams:
            if stream in self._rows:
                known[stream] = self._rows[stream]
            else:
                unknown.append(stream)
        return known, unknown

    async def rows(
        self,
        streams: Iterable[UUID],
        read: Callable[[list[UUID]], Awaitable[Mapping[UUID, Row]]],
    ) -> dict[UUID, Row | None]:
        """The rows of ``streams``: those remembered, the others as ``read`` finds them
        (``None`` for a stream it finds no row of)."""
        rows, unknown = self.recall(streams)
        if unknown:
            rows |= dict.fromkeys(unknown)
            rows |= await read(unknown)
        return rows

    def keep(self, rows: Mapping[UUID, Row | None]) -> None:
        """Remember the rows a batch wrote (or found missing), newest last."""
        if not self.limit:
            return
        for stream, row in rows.items():
            self._rows.pop(stream, None)
            self._rows[stream] = row
        if (excess := len(self._rows) - self.limit) > 0:
            for stream in list(islice(self._rows, excess)):
                del self._rows[stream]

    def forget(self) -> None:
        self._rows.clear()
        self.written_at = None


def rows_of(
    connection: Connection, table: str, row: type[StructRow]
) -> Callable[[list[UUID]], Awaitable[dict[UUID, StructRow]]]:
    """A read of ``table``'s rows of some streams as ``row`` Structs (its fields are
    columns), for ``ViewMemory.rows``."""
    query = f"SELECT {', '.join(row.__struct_fields__)} FROM {table} WHERE stream_id = any($1)"

    async def read(streams: list[UUID]) -> dict[UUID, StructRow]:
        return {r["stream_id"]: row(**dict(r)) for r in await connection.fetch(query, streams)}

    return read


async def fold_remembered(
    memory: ViewMemory[StructRow],
    connection: Connection,
    table: str,
    row: type[StructRow],
    events: Sequence[ProjectedEvent],
    fold: Callable[[StructRow | None, ProjectedEvent], StructRow | None],
) -> list[tuple[Any, ...]]:
    """A batch folded into its streams' rows (read from ``table`` only where ``memory``
    holds none), remembered; the rows to write, as tuples of the Struct's fields."""
    rows = await memory.rows({e.stream_id for e in events}, rows_of(connection, table, row))
    for event in events:
        rows[event.stream_id] = fold(rows[event.stream_id], event)
    memory.keep(rows)
    return [msgspec.structs.astuple(folded) for folded in rows.values() if folded is not None]
