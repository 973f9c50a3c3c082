"""Events as projections see them: the declared event, where it is in the store and when.

Views dispatch on the event's class (ledger/domain/events.py) and read its
attributes; they never import the aggregates. The event is decoded by the
store's mapper, once per batch, and shared by every view.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate
from eventsourcing.utils import TopicError

from ledger.store.event_store import RecordedEvent
from ledger.store.mapper import MsgspecMapper

_decode = MsgspecMapper().to_domain_event


class Unrecognised(msgspec.Struct, frozen=True):
    """An event whose topic names no class of this code (another program's, say): views skip it.

    As they always have; ``ledger audit verify`` reports it as unreadable.
    """

    topic: str


class ProjectedEvent(msgspec.Struct, frozen=True, gc=False):
    """One stored event, decoded for the views.

    Not tracked by the garbage collector (``gc=False``): it refers to its event and
    nothing refers back, and a rebuild makes millions of them.
    """

    position: int
    stream_id: UUID
    version: int
    event: Aggregate.Event | Unrecognised
    """The event itself, e.g. ``CreditsSpent``; old topics decode to the same classes."""
    recorded_at: datetime


class ByEventClass(dict[type, Any]):
    """A value per event class, read as ``table[type(event)]``: the value given for the
    class, else for its nearest base that has one, else ``default``.

    Decided once per class: ``isinstance`` calls every class's ``__instancecheck__``
    (the events' metaclass has one), and the views ask about every event of a batch.
    """

    def __init__(self, values: dict[type, Any], default: Any = None) -> None:
        super().__init__(values)
        self.given = dict(values)
        self.default = default

    def __missing__(self, cls: type) -> Any:
        # Only the classes given are searched: a base already looked up holds the
        # default, which must not hide a value given for a later base.
        found = next((self.given[b] for b in cls.__mro__[1:] if b in self.given), self.default)
        self[cls] = found
        return found


class EventKinds(ByEventClass):
    """Whether an event's class is one of ``kinds`` (or a subclass of one), by
    ``kinds[type(event)]``."""

    def __init__(self, *kinds: type) -> None:
        super().__init__(dict.fromkeys(kinds, True), default=False)


def as_text(value: str) -> str:
    """``value`` as a view's text can keep it: PostgreSQL's text holds no NUL character, which
    a reason recorded before reasons were checked for one may hold (U+FFFD stands for it)."""
    return value.replace("\x00", "\ufffd")


class UnreadableEvent(Exception):
    """A stored event of a known type whose state does not decode into it: no view can
    pass it, so the projector stops there. Its message is one line naming the event."""

    def __init__(self, recorded: RecordedEvent, error: Exception) -> None:
        self.position = recorded.notification_id
        reason = " ".join(str(error).split()) or "no detail"
        super().__init__(
            f"event at position {recorded.notification_id} ({recorded.topic.rpartition(':')[2]}, "
            f"stream {recorded.originator_id} version {recorded.originator_version}) cannot be "
            f"read: {type(error).__name__}: {reason}"
        )


def projected(recorded: RecordedEvent) -> ProjectedEvent:
    """Decode a stored event into its declared class, with its place in the store
    (UnreadableEvent if its state does not decode)."""
    try:
        event = _decode(recorded)
    except TopicError:
        event = Unrecognised(recorded.topic)
    except Exception as error:  # msgspec's, or an upcaster's, on a state it cannot take
        raise UnreadableEvent(recorded, error) from error
    return ProjectedEvent(
        recorded.notification_id,
        recorded.originator_id,
        recorded.originator_version,
        event,
        recorded.recorded_at,
    )
