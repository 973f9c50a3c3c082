"""Events as projections see them: a type name and JSON data, nothing of the domain's code."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from ledger.store.event_store import RecordedEvent
from ledger.store.mapper import event_type_name

_decode = msgspec.json.Decoder().decode


class ProjectedEvent(msgspec.Struct, frozen=True):
    """One stored event, decoded for a view."""

    position: int
    stream_id: UUID
    version: int
    type: str
    data: dict[str, Any]
    recorded_at: datetime


def projected(recorded: RecordedEvent) -> ProjectedEvent:
    """Decode a stored event's JSON state; projections never import the aggregates."""
    return ProjectedEvent(
        position=recorded.notification_id,
        stream_id=recorded.originator_id,
        version=recorded.originator_version,
        type=event_type_name(recorded.topic),
        data=_decode(recorded.state),
        recorded_at=recorded.recorded_at,
    )
