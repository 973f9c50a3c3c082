"""Declared events made by hand, as the views receive them: no aggregate, no database."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

from eventsourcing.domain import Aggregate

from projections.events import ProjectedEvent, moved

E = TypeVar("E", bound=Aggregate.Event)


def made(cls: type[E], stream: uuid.UUID | None = None, version: int = 1, **fields: Any) -> E:
    """An event of ``cls`` with these fields (its identity and time filled in)."""
    identity: dict[str, Any] = {
        "originator_id": stream or uuid.uuid4(),
        "originator_version": version,
        "timestamp": datetime.now(UTC),
    }
    if any(f.name == "originator_topic" for f in dataclasses.fields(cls)):  # type: ignore[arg-type]
        identity["originator_topic"] = "tests:Aggregate"
    return cls(**identity, **fields)


def projected_in_order(
    stream: uuid.UUID, events: list[Aggregate.Event], first_position: int = 1
) -> list[ProjectedEvent]:
    """The events as the projector hands them to a view, one after another on ``stream``."""
    return [
        ProjectedEvent(position, stream, position, event, datetime.now(UTC), moved(event))
        for position, event in enumerate(events, start=first_position)
    ]
