"""The holds view: one row per hold with its status (what the expiry sweeper reads)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import msgspec

from ledger.store.event_store import Connection
from projections.events import ProjectedEvent

_COLUMNS = (
    "hold_id, stream_id, amount, captured, released, status, reason, expires_at, placed_at, "
    "settled_at, position"
)
_SETTLED_AS = {"HoldCaptured": "captured", "HoldReleased": "released", "HoldExpired": "expired"}


class HoldRow(msgspec.Struct):
    hold_id: str
    stream_id: UUID
    amount: int
    captured: int
    released: int
    status: str
    reason: str
    expires_at: datetime
    placed_at: datetime
    settled_at: datetime | None
    position: int


def fold(row: HoldRow | None, event: ProjectedEvent) -> HoldRow | None:
    """The hold after one of its events."""
    data = event.data
    if event.type == "HoldPlaced":
        return HoldRow(
            hold_id=str(data["hold_id"]),
            stream_id=event.stream_id,
            amount=int(data["amount"]),
            captured=0,
            released=0,
            status="held",
            reason=str(data.get("reason") or ""),
            expires_at=datetime.fromisoformat(str(data["expires_at"])),
            placed_at=event.recorded_at,
            settled_at=None,
            position=event.position,
        )
    if row is None:
        return None
    row.status = _SETTLED_AS[event.type]
    row.captured = int(data.get("captured") or 0)
    row.released = int(data["released"])
    row.settled_at, row.position = event.recorded_at, event.position
    return row


class HoldsProjection:
    """Every hold of every account, open or settled."""

    name = "holds"
    table = "holds"

    async def apply(
        self, connection: Connection, table: str, events: Sequence[ProjectedEvent]
    ) -> None:
        """Fold a batch's hold events into their rows: one read, one write."""
        mine = [e for e in events if e.type == "HoldPlaced" or e.type in _SETTLED_AS]
        if not mine:
            return
        hold_ids = list({str(e.data["hold_id"]) for e in mine})
        rows: dict[str, HoldRow | None] = {
            r["hold_id"]: HoldRow(**dict(r))
            for r in await connection.fetch(
                f"SELECT {_COLUMNS} FROM {table} WHERE hold_id = any($1)", hold_ids
            )
        }
        for event in mine:
            hold_id = str(event.data["hold_id"])
            rows[hold_id] = fold(rows.get(hold_id), event)
        await connection.executemany(
            f"""INSERT INTO {table} ({_COLUMNS})
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                ON CONFLICT (hold_id) DO UPDATE SET
                    captured = excluded.captured, released = excluded.released,
                    status = excluded.status, settled_at = excluded.settled_at,
                    position = excluded.position""",
            [msgspec.structs.astuple(row) for row in rows.values() if row is not None],
        )
