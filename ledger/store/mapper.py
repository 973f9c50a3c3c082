"""Domain events to stored events and back, encoded as JSON with msgspec.

The stored ``state`` is plain UTF-8 JSON of the event's fields (without
``originator_id`` and ``originator_version``, which have their own columns),
so auditors can read it with ``convert_from(state, 'UTF8')::jsonb``.
``class_version`` is written when an event class is past version 1, and
older shapes are upcast on load by the class's ``upcast_vX_vY`` methods,
as the eventsourcing library's own mapper does.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

import msgspec
from eventsourcing.domain import DomainEventProtocol, Snapshot
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic, resolve_topic

from ledger.store.event_store import RecordedEvent

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


@cache
def _topic_of(cls: type) -> str:
    return get_topic(cls)


@cache
def _class_of(topic: str) -> type:
    return resolve_topic(topic)


def event_type_name(topic: str) -> str:
    """What auditors see as an event's type: its class name, e.g. ``CreditsSpent``."""
    return topic.rsplit(".", 1)[-1].rsplit(":", 1)[-1]


class MsgspecMapper(Mapper[Any]):
    """A ``Mapper`` that encodes with msgspec: about twice as fast as the JSON transcoder."""

    def __init__(self) -> None:
        super().__init__(transcoder=None)  # type: ignore[arg-type]

    def to_stored_event(self, domain_event: DomainEventProtocol[Any]) -> StoredEvent:
        """Encode one domain event for the store."""
        cls = type(domain_event)
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        class_version = getattr(cls, "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        return StoredEvent(
            originator_id=originator_id,
            originator_version=originator_version,
            topic=_topic_of(cls),
            state=_encode(state),
        )

    def to_domain_event(self, stored_event: StoredEvent | RecordedEvent) -> Any:
        """Decode one stored event, upcasting older shapes to the current class."""
        cls = _class_of(stored_event.topic)
        state: dict[str, Any] = _decode(stored_event.state)
        from_version = state.pop("class_version", 1)
        class_version = getattr(cls, "class_version", 1)
        while from_version < class_version:
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(state)
            from_version += 1
        state["originator_id"] = stored_event.originator_id
        state["originator_version"] = stored_event.originator_version
        decoded: Any = msgspec.convert(state, type=cls, strict=False)
        if isinstance(decoded, Snapshot):
            _restore_snapshot_state(_class_of(decoded.topic), decoded.state)
        return decoded


def _restore_snapshot_state(aggregate_class: type, state: dict[str, Any]) -> None:
    """Upcast a snapshot's state to its aggregate's current shape and give its values their types.

    A snapshot's state is an untyped dict, so JSON leaves datetimes as strings and
    structs as objects; the aggregate's ``restore_state`` types its own fields.
    """
    for key in ("_created_on", "_modified_on"):
        if isinstance(state.get(key), str):
            state[key] = datetime.fromisoformat(state[key])
    from_version = state.pop("class_version", 1)
    class_version = getattr(aggregate_class, "class_version", 1)
    while from_version < class_version:
        getattr(aggregate_class, f"upcast_v{from_version}_v{from_version + 1}")(state)
        from_version += 1
    if class_version > 1:
        state["class_version"] = class_version  # upcast already: Snapshot.mutate need not
    if (restore := getattr(aggregate_class, "restore_state", None)) is not None:
        restore(state)
