"""Events as projections see them: the declared event, where it is in the store and when.

Views dispatch on the event's class (ledger/domain/events.py) and read its
attributes; they never import the aggregates. The event is decoded by the
store's mapper, once per batch, and shared by every view.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate
from eventsourcing.utils import TopicError

from ledger.domain.events import CreditsSpent
from ledger.store.event_store import DATABASE_ERRORS, Connection, RecordedEvent, ReplayedEvent
from ledger.store.hash_chain import postgres_microseconds, postgres_moment
from ledger.store.mapper import FastDecode, MsgspecMapper, fast_decoder
from projections.by_class import ByEventClass as ByEventClass
from projections.by_class import EventKinds as EventKinds
from projections.by_class import WhichOf as WhichOf
from projections.moves import MOVES, Moved

_decode = MsgspecMapper().to_domain_event


class Unrecognised(msgspec.Struct, frozen=True):
    """An event whose topic names no class of this code (another program's, say): views skip it.

    As they always have; ``ledger audit verify`` reports it as unreadable.
    """

    topic: str


Moment = datetime | int
"""A time as the connection a view is folded on reads and writes a ``timestamptz``: a
datetime (asyncpg's own codec: the live projector's), or the microseconds since 2000 that
PostgreSQL keeps (a rebuild's connections: ``times_as_microseconds``). A view copies an
event's time into its rows as it is, and a time the event holds as ``event_moment`` makes
it; it compares them only with times read on the same connection, or through
``as_datetime``: a rebuild makes no datetime of the millions of times it reads and writes."""


@contextlib.asynccontextmanager
async def times_as_microseconds(connection: Connection) -> AsyncIterator[None]:
    """Within, ``connection`` reads and writes every ``timestamptz`` as PostgreSQL keeps it,
    an int of microseconds since 2000 (``Moment``), by asyncpg's own ``int8`` codec, in C: a
    ``timestamptz``'s binary form is an int8's (its microseconds, infinities as the int8's
    ends).

    For a rebuild's fold and an audit's replay: asyncpg's datetimes, made for each event's
    time and view row read and taken apart again for each written (COPY's statement lines
    above all), are dearer than the events' folds. Its events are read with their times so
    too (``ReplayedEvent``). A datetime is not written so: a view writes a time an event
    holds as ``event_moment`` makes it. (The ``tuple`` format, which took either, called a
    Python function for every time written: ~1,200 instructions of a rebuild's event.)
    """
    await connection.set_builtin_type_codec(
        "timestamptz", schema="pg_catalog", codec_name="int8", format="binary"
    )
    try:
        yield
    finally:
        with contextlib.suppress(*DATABASE_ERRORS):  # a connection gone keeps the error it had
            await connection.reset_type_codec("timestamptz", schema="pg_catalog")


def event_moment(moment: datetime, recorded_at: Moment) -> Moment:
    """A time an event holds (a hold's expiry, a grant's) as the view writes its event's
    ``recorded_at``: a datetime on the live projector's connection, the microseconds since
    2000 on a rebuild's (``times_as_microseconds``), a naive datetime taken as local time,
    as asyncpg writes one."""
    if type(recorded_at) is int:
        return postgres_microseconds(moment.astimezone(UTC))
    return moment


def as_datetime(moment: Moment) -> datetime:
    """A ``Moment`` as a datetime, as asyncpg would have read it (for the few that need one)."""
    return moment if isinstance(moment, datetime) else postgres_moment(moment)


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
    recorded_at: Moment
    moved: Moved | None
    """What the event adds to the buckets, ``moved_by(event, 0)``, worked out once here for
    every view that keeps balances (three did, each an event); None if it moves no credits.
    A ``MonthlyAllowanceReset``'s allowance is the new one: each view subtracts the
    allowance it had left before it."""


_Projected = TypeVar("_Projected", bound="ProjectedEvent")


def of_kinds(events: Sequence[_Projected], kinds: EventKinds) -> list[_Projected]:
    """The events whose class is one of ``kinds``, in order: a view's share of a batch,
    looked up in ``kinds.exact`` (every view sifts every event of a batch)."""
    exact = kinds.exact
    try:
        return [e for e in events if exact[type(e.event)]]
    except KeyError:  # a class not decided yet: decide every one, then again
        for e in events:
            kinds[type(e.event)]
        return [e for e in events if exact[type(e.event)]]


def moved(event: object) -> Moved | None:
    """``ProjectedEvent.moved`` of ``event``."""
    move = MOVES[type(event)]
    return None if move is None else move(event, 0)


def as_text(value: str) -> str:
    """``value`` as a view's text can keep it: PostgreSQL's text holds no NUL character, which
    a reason recorded before reasons were checked for one may hold (U+FFFD stands for it)."""
    return value.replace("\x00", "\ufffd")


class UnreadableEvent(Exception):
    """A stored event of a known type whose state does not decode into it: no view can
    pass it, so the projector stops there. Its message is one line naming the event."""

    def __init__(self, recorded: RecordedEvent | ReplayedEvent, error: Exception) -> None:
        self.position = recorded.notification_id
        reason = " ".join(str(error).split()) or "no detail"
        super().__init__(
            f"event at position {recorded.notification_id} ({recorded.topic.rpartition(':')[2]}, "
            f"stream {recorded.originator_id} version {recorded.originator_version}) cannot be "
            f"read: {type(error).__name__}: {reason}"
        )


def projected(recorded: RecordedEvent | ReplayedEvent) -> ProjectedEvent:
    """Decode a stored event into its declared class, with its place in the store and its
    time as it was read (a replayed event's microseconds: ``Moment``); UnreadableEvent if
    its state does not decode."""
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
        recorded.microseconds if type(recorded) is ReplayedEvent else recorded.recorded_at,
        moved(event),
    )


def _domain_event(recorded: ReplayedEvent) -> Aggregate.Event | Unrecognised:
    """The mapper's decoding of a replayed event (its general path, where the fast one has
    none or gave up), as ``projected`` decodes; UnreadableEvent if its state does not."""
    try:
        return _decode(recorded)  # type: ignore[no-any-return]
    except TopicError:
        return Unrecognised(recorded.topic)
    except Exception as error:  # as projected()'s
        raise UnreadableEvent(recorded, error) from error


_FAST_DECODERS: dict[str, FastDecode | None] = {}
"""Each topic's fast decoder (``ledger.store.mapper``), None for a topic that names no
class; found by one lookup an event, where the mapper's ``functools.cache`` wrapper and
its own frame cost a rebuild ~1.5 % of its instructions."""


def _fast_decoder_of(topic: str) -> FastDecode | None:
    try:
        fast = fast_decoder(topic)
    except TopicError:
        fast = None  # the general path makes it Unrecognised
    _FAST_DECODERS[topic] = fast
    return fast


def replayed_projected(replayed: Sequence[ReplayedEvent]) -> list[ProjectedEvent]:
    """``projected`` of each event of a rebuild's batch, with one id object a stream.

    Every view keys its rows by ``stream_id`` (a set, then a dict read and written once an
    event each): asyncpg's UUID makes its hash from a Python int of its 128 bits, once an
    object, and compares two objects of the same id field by field. Read, each event's
    id is an object of its own; here the events of a stream share the first one's, so its
    hash is made once a batch and each look-up finds it by identity.
    """
    streams: dict[bytes, UUID] = {}
    decoded: list[ProjectedEvent] = []
    append = decoded.append
    moves = MOVES.exact
    fast_decoders = _FAST_DECODERS
    for recorded in replayed:
        stream_id = recorded.originator_id
        stream_id = streams.setdefault(stream_id.bytes, stream_id)
        # The mapper's to_domain_event, its fast path called here (as audit/stream_replay.py does).
        try:
            fast = fast_decoders[recorded.topic]
        except KeyError:
            fast = _fast_decoder_of(recorded.topic)
        event = None
        if fast is not None:
            try:
                event = fast(recorded.state, recorded.originator_id, recorded.originator_version)
            except msgspec.ValidationError:
                pass  # the general path decides, and says what is wrong
            except Exception as error:  # as _domain_event's
                raise UnreadableEvent(recorded, error) from error
        if event is None:  # an older shape to upcast, or no fast path
            event = _domain_event(recorded)
        if type(event) is CreditsSpent:  # nearly every event: moves._spent, written out
            grants = event.from_grants
            moved_now: Moved | None = (
                -event.from_allowance,
                -event.from_topup,
                -sum(grants.values()) if grants else 0,
            )
        else:  # moved(event), written out: a call less an event
            try:
                move = moves[type(event)]
            except KeyError:
                move = MOVES[type(event)]
            moved_now = None if move is None else move(event, 0)
        append(
            ProjectedEvent(
                recorded.notification_id,
                stream_id,
                recorded.originator_version,
                event,
                recorded.microseconds,
                moved_now,
            )
        )
    return decoded
