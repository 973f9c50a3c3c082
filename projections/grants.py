"""The grants view: one row per grant with what remains of it and its status.

What the expiry sweeper and ``GET /v1/accounts/{id}/grants`` read. ``remaining``
counts what open holds reserve of a grant, as the account does; ``position`` is
the grant's own event's (lists page on it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from operator import attrgetter
from typing import cast
from uuid import UUID

import msgspec

from ledger.domain.events import (
    CreditsGranted,
    CreditsSpent,
    GrantExpired,
    GrantVoided,
    HoldCaptured,
    HoldExpired,
    HoldReleased,
)
from ledger.store.event_store import Connection
from projections.events import (
    ByEventClass,
    Moment,
    ProjectedEvent,
    WhichOf,
    as_text,
    event_moment,
)
from projections.writes import Write, WritesView


def _own_grant(event: CreditsGranted | GrantExpired | GrantVoided) -> tuple[str]:
    return (event.grant_id,)


def _captured_from(captured: HoldCaptured) -> Collection[str]:
    return captured.from_grants.keys() | captured.grants_lapsed.keys()


_GRANT_IDS = ByEventClass(
    {
        CreditsGranted: _own_grant,
        GrantExpired: _own_grant,
        GrantVoided: _own_grant,
        CreditsSpent: attrgetter("from_grants"),  # not a lambda: no frame a spend
        HoldCaptured: _captured_from,
        HoldReleased: attrgetter("grants_lapsed"),
        HoldExpired: attrgetter("grants_lapsed"),
    }
)
"""The grants an event touches, by class: its own grant's, or those it takes from (the
keys of its dicts, read as they are: most spends take from no grant, and a list and a
dict made for each through a ``match`` cost a rebuild ~4 % of its instructions); None for
the events of no grant."""


class GrantRow(msgspec.Struct):
    grant_id: str
    stream_id: UUID
    amount: int
    remaining: int
    priority: int
    expires_at: Moment | None
    reason: str
    status: str
    granted_at: Moment
    closed_at: Moment | None
    position: int


# The row's fields are the table's columns (and migration 0017's grant_row, in order).
_COLUMNS = ", ".join(GrantRow.__struct_fields__)

# One array of records (migration 0017's grant_row), as the balances view writes its rows.
_UPSERT = f"""INSERT INTO {{table}} ({_COLUMNS})
    SELECT {_COLUMNS} FROM unnest($1::grant_row[])
    ON CONFLICT (grant_id) DO UPDATE SET
        remaining = excluded.remaining, status = excluded.status,
        closed_at = excluded.closed_at"""


def _taken_at_capture(captured: HoldCaptured) -> dict[str, int]:
    taken = dict(captured.from_grants)
    for grant_id, lapsed in captured.grants_lapsed.items():
        taken[grant_id] = taken.get(grant_id, 0) + lapsed
    return taken


_TAKEN = ByEventClass(
    {
        CreditsSpent: attrgetter("from_grants"),
        HoldCaptured: _taken_at_capture,
        HoldReleased: attrgetter("grants_lapsed"),
        HoldExpired: attrgetter("grants_lapsed"),
    }
)
"""What an event takes from each grant, by class (see ``taken_from_grants``); None for the
events that take nothing."""


def taken_from_grants(event: object) -> dict[str, int]:
    """What an account event took from each grant (spent, or lapsed at settlement)."""
    try:  # _TAKEN[type(event)], in the plain dict first
        taken = _TAKEN.exact[type(event)]
    except KeyError:
        taken = _TAKEN[type(event)]
    return {} if taken is None else taken(event)


def closed_at(kind: type, expires_at: Moment | None, recorded_at: Moment) -> Moment:
    """When a grant closed by an event of ``kind`` recorded at ``recorded_at``: a void then,
    an expiry at the grant's ``expires_at``, however late it was recorded (a list shows an
    expiry not recorded yet so: api/routes/grants.py)."""
    if kind is GrantExpired and expires_at is not None:
        return expires_at
    return recorded_at


def _grant_moves(
    events: Sequence[ProjectedEvent],
) -> list[tuple[ProjectedEvent, Collection[str]]]:
    """The events that touch grants, with the grants each touches (``_GRANT_IDS.exact``,
    as ``of_kinds`` looks up)."""
    grant_ids = _GRANT_IDS.exact
    try:
        return [
            (projected, ids)
            for projected in events
            if (grants_of := grant_ids[type(projected.event)]) is not None
            and (ids := grants_of(projected.event))
        ]
    except KeyError:  # a class not decided yet: decide every one, then again
        for projected in events:
            _GRANT_IDS[type(projected.event)]
        return _grant_moves(events)


_WHICH = WhichOf(CreditsGranted, GrantExpired, GrantVoided)
_WHICH_EXACT = _WHICH.exact
_CLOSED_AS = {GrantExpired: "expired", GrantVoided: "voided"}
"""The status each event that closes a grant leaves it in."""


class GrantsProjection(WritesView):
    """Every grant of every account, active or closed."""

    name = "grants"
    table = "grants"

    async def fold(
        self, connection: Connection, table: str, events: Sequence[ProjectedEvent]
    ) -> list[Write]:
        """A batch's grant movements folded into their rows: one read, one write."""
        moves = _grant_moves(events)
        if not moves:
            return []
        wanted = list({grant_id for _, ids in moves for grant_id in ids})
        rows: dict[str, GrantRow] = {
            r["grant_id"]: GrantRow(**dict(r))
            for r in await connection.fetch(
                f"SELECT {_COLUMNS} FROM {table} WHERE grant_id = any($1)", wanted
            )
        }
        for projected, _ in moves:
            self._fold(rows, projected)
        written = [msgspec.structs.astuple(row) for row in rows.values()]
        return [Write(_UPSERT.format(table=table), (written,))] if written else []

    @staticmethod
    def _fold(rows: dict[str, GrantRow], projected: ProjectedEvent) -> None:
        event = projected.event
        try:  # isinstance() of each class, looked up (see WhichOf)
            which = _WHICH_EXACT[type(event)]
        except KeyError:
            which = _WHICH[type(event)]
        if which is CreditsGranted:
            assert isinstance(event, CreditsGranted)  # for the type checker: cheap when it is
            rows[event.grant_id] = GrantRow(
                grant_id=event.grant_id,
                stream_id=projected.stream_id,
                amount=event.amount,
                remaining=event.amount,
                priority=event.priority,
                expires_at=None
                if event.expires_at is None
                else event_moment(datetime.fromisoformat(event.expires_at), projected.recorded_at),
                reason=as_text(event.reason),
                status="active",
                granted_at=projected.recorded_at,
                closed_at=None,
                position=projected.position,
            )
            return
        if (status := _CLOSED_AS.get(which)) is not None:
            closing = cast("GrantExpired | GrantVoided", event)
            row = rows[closing.grant_id]
            row.remaining -= closing.lapsed
            row.status = status
            row.closed_at = closed_at(type(event), row.expires_at, projected.recorded_at)
            return
        for grant_id, taken in taken_from_grants(event).items():
            rows[grant_id].remaining -= taken
