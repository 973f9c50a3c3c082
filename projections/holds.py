"""The holds view: one row per hold with its status (what the expiry sweeper reads)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from operator import attrgetter
from typing import cast
from uuid import UUID

import msgspec

from ledger.domain.events import (
    HOLD_SETTLEMENTS,
    HoldCaptured,
    HoldExpired,
    HoldPlaced,
    HoldReleased,
)
from ledger.store.event_store import Connection
from projections.events import (
    EventKinds,
    Moment,
    ProjectedEvent,
    WhichOf,
    as_text,
    event_moment,
    of_kinds,
)
from projections.writes import Write, WritesView

_SETTLED_AS: dict[type, str] = {
    HoldCaptured: "captured",
    HoldReleased: "released",
    HoldExpired: "expired",
}
"""The status each of ``HOLD_SETTLEMENTS`` leaves a hold in."""
assert set(_SETTLED_AS) == set(HOLD_SETTLEMENTS)


class HoldRow(msgspec.Struct):
    hold_id: str
    stream_id: UUID
    amount: int
    captured: int
    released: int
    status: str
    reason: str
    expires_at: Moment
    placed_at: Moment
    settled_at: Moment | None
    position: int


# The row's fields are the table's columns (and migration 0017's hold_row, in order).
_COLUMNS = ", ".join(HoldRow.__struct_fields__)

# One array of records (migration 0017's hold_row), as the balances view writes its rows.
_UPSERT = f"""INSERT INTO {{table}} ({_COLUMNS})
    SELECT {_COLUMNS} FROM unnest($1::hold_row[])
    ON CONFLICT (hold_id) DO UPDATE SET
        captured = excluded.captured, released = excluded.released,
        status = excluded.status, settled_at = excluded.settled_at,
        position = excluded.position"""


_WHICH = WhichOf(HoldPlaced, *HOLD_SETTLEMENTS)
_WHICH_EXACT = _WHICH.exact


def fold(row: HoldRow | None, projected: ProjectedEvent) -> HoldRow | None:
    """The hold after one of its events."""
    event = projected.event
    try:  # isinstance() of each class, looked up (see WhichOf)
        which = _WHICH_EXACT[type(event)]
    except KeyError:
        which = _WHICH[type(event)]
    if which is HoldPlaced:
        assert isinstance(event, HoldPlaced)  # for the type checker: cheap when it is
        return HoldRow(
            hold_id=event.hold_id,
            stream_id=projected.stream_id,
            amount=event.amount,
            captured=0,
            released=0,
            status="held",
            reason=as_text(event.reason),
            expires_at=event_moment(
                datetime.fromisoformat(event.expires_at), projected.recorded_at
            ),
            placed_at=projected.recorded_at,
            settled_at=None,
            position=projected.position,
        )
    if row is None or which is None:
        return row
    if which is HoldCaptured:
        assert isinstance(event, HoldCaptured)
        row.captured, row.released = event.captured, event.released
    else:  # released or expired: cast, not an isinstance of their union (see WhichOf)
        row.captured, row.released = 0, cast("HoldReleased | HoldExpired", event).released
    row.status = _SETTLED_AS[which]
    row.settled_at, row.position = projected.recorded_at, projected.position
    return row


_HOLD_EVENTS = EventKinds(HoldPlaced, *HOLD_SETTLEMENTS)
_hold_id = attrgetter("hold_id")
"""The hold of one of ``_HOLD_EVENTS`` (each has its ``hold_id``), asked without an
``isinstance`` of their union."""


class HoldsProjection(WritesView):
    """Every hold of every account, open or settled."""

    name = "holds"
    table = "holds"

    async def fold(
        self, connection: Connection, table: str, events: Sequence[ProjectedEvent]
    ) -> list[Write]:
        """A batch's hold events folded into their rows: one read, one write."""
        mine = [(_hold_id(e.event), e) for e in of_kinds(events, _HOLD_EVENTS)]
        if not mine:
            return []
        hold_ids = list({hold_id for hold_id, _ in mine})
        rows: dict[str, HoldRow | None] = {
            r["hold_id"]: HoldRow(**dict(r))
            for r in await connection.fetch(
                f"SELECT {_COLUMNS} FROM {table} WHERE hold_id = any($1)", hold_ids
            )
        }
        for hold_id, event in mine:
            rows[hold_id] = fold(rows.get(hold_id), event)
        written = [msgspec.structs.astuple(row) for row in rows.values() if row is not None]
        return [Write(_UPSERT.format(table=table), (written,))] if written else []
