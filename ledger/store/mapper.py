"""Domain events to stored events and back, encoded as JSON with msgspec.

The stored ``state`` is plain UTF-8 JSON of the event's fields (without
``originator_id`` and ``originator_version``, which have their own columns),
so auditors can read it with ``convert_from(state, 'UTF8')::jsonb``.
``class_version`` is written when an event class is past version 1, and
older shapes are upcast on load by the class's ``upcast_vX_vY`` methods,
as the eventsourcing library's own mapper does.

Decoding is on every reader's path (loads, the projector, rebuilds, the audit), so
an event in its class's current shape is decoded straight from its JSON into a
TypedDict of the class's fields, typed as the class declares them, and that dict
becomes the event's ``__dict__``: about three times faster than a dict converted
into the dataclass. Older shapes, snapshots and anything that does not fit take the
general path.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple, NotRequired, TypedDict, TypeVar
from uuid import UUID

import msgspec
from eventsourcing.domain import CanMutateAggregate, DomainEventProtocol, Snapshot
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic, resolve_topic

from ledger.store.event_store import RecordedEvent, ReplayedEvent

_encode = msgspec.json.Encoder().encode
_new = object.__new__
_decode = msgspec.json.Decoder().decode


@cache
def _encoding(cls: type) -> tuple[str, int]:
    """The topic and class version an event of ``cls`` is stored with: one lookup per event
    (``getattr`` of a ``class_version`` most classes lack cost as much as the rest)."""
    return get_topic(cls), getattr(cls, "class_version", 1)


@cache
def _class_of(topic: str) -> type:
    return resolve_topic(topic)


FastDecode = Callable[[bytes, UUID | str, int], Any]


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


class FastShape(NamedTuple):
    """What a class's fast decoder (``fast_decoder``) is made of, for a reader that writes its
    steps out rather than call it (``audit.stream_replay``: a frame fewer an event)."""

    decode: Callable[[bytes], dict[str, Any]]
    """The stored JSON to a dict of the class's own fields, plus ``class_version``."""
    current: int
    """The class's version: a state of another is upcast by the general path."""
    every: int
    """How many fields the JSON holds when none with a default is left out."""
    defaults: tuple[tuple[str, Callable[[], Any]], ...]
    """Each field with a default, and what makes it."""
    cls: type
    set_dict: Callable[[Any, dict[str, Any]], None]
    """What gives an instance of ``cls`` its ``__dict__`` (``_dict_setter``)."""


@cache
def _fast_shape(cls: type) -> FastShape | None:
    """The parts of a decoder from stored JSON straight into ``cls``; None where only the
    general path fits.

    The JSON is decoded (and its types checked) as a TypedDict of the class's own
    fields, plus ``class_version``: a plain dict, which becomes the event's
    ``__dict__`` as it is (a Struct of the fields, turned into one, made two objects
    more per event). Fields with a default that the JSON leaves out are filled in;
    an event stored by an older version of the class answers None and takes the
    general path, to be upcast. The identity fields are columns of their own, not
    in the JSON.
    """
    if not (dataclasses.is_dataclass(cls) and issubclass(cls, CanMutateAggregate)):
        return None
    if issubclass(cls, Snapshot):
        return None
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):
        return None
    spec: dict[str, Any] = {}
    defaults: list[tuple[str, Callable[[], Any]]] = []
    for field in dataclasses.fields(cls):
        if field.name in ("originator_id", "originator_version"):
            continue
        if field.default is not dataclasses.MISSING:
            spec[field.name] = NotRequired[hints[field.name]]
            defaults.append((field.name, _constant(field.default)))
        elif field.default_factory is not dataclasses.MISSING:
            spec[field.name] = NotRequired[hints[field.name]]
            defaults.append((field.name, field.default_factory))
        else:
            spec[field.name] = hints[field.name]
    every = len(spec)
    spec["class_version"] = NotRequired[int]
    typed_dict: Any = TypedDict  # a TypedDict of fields known only at run time
    decode = msgspec.json.Decoder(typed_dict(f"{cls.__name__}State", spec), strict=False).decode
    current = getattr(cls, "class_version", 1)
    return FastShape(decode, current, every, tuple(defaults), cls, _dict_setter(cls))


@cache
def _fast_decoder(cls: type) -> FastDecode | None:
    """A decoder from stored JSON straight into ``cls`` (``_fast_shape``); None where only the
    general path fits."""
    shape = _fast_shape(cls)
    if shape is None:
        return None
    decode, current, every, defaults, _, set_dict = shape
    new = object.__new__

    def decode_event(state: bytes, originator_id: UUID | str, originator_version: int) -> Any:
        values: dict[str, Any] = decode(state)
        if values.pop("class_version", 1) != current:
            return None
        if len(values) != every:  # only known fields are kept: some with a default are not there
            for name, default in defaults:
                if name not in values:
                    values[name] = default()
        values["originator_id"] = originator_id
        values["originator_version"] = originator_version
        event: Any = new(cls)
        set_dict(event, values)  # past the frozen __setattr__, as dataclasses' __init__ goes
        return event

    return decode_event


def _dict_setter(cls: type) -> Callable[[Any, dict[str, Any]], None]:
    """What gives an instance of ``cls`` its ``__dict__``: the setter of the ``__dict__``
    descriptor its instances inherit. ``object.__setattr__(event, "__dict__", values)`` finds
    the same descriptor by a generic attribute lookup for every event (~800 instructions)."""
    owner = next(base for base in cls.__mro__ if "__dict__" in vars(base))
    setter: Callable[[Any, dict[str, Any]], None] = vars(owner)["__dict__"].__set__
    return setter


_set_stored_dict = _dict_setter(StoredEvent)


@cache
def _decoding(topic: str) -> tuple[type, FastDecode | None]:
    """The class a topic names and its fast decoder: one lookup per event."""
    cls = _class_of(topic)
    return cls, _fast_decoder(cls)


def fast_shape(topic: str) -> FastShape | None:
    """``fast_decoder``'s parts (``FastShape``), for a reader that writes its steps out: they
    must be followed as ``_fast_decoder`` follows them. Raises for a topic that names no
    class."""
    return _fast_shape(_class_of(topic))


def fast_decoder(topic: str) -> FastDecode | None:
    """The fast decoder of a topic's class (None where only the general path fits), for a
    reader that keeps its own per-topic lookup: it answers None for a state in an older
    shape and raises ``msgspec.ValidationError`` for one that does not fit; either way
    ``MsgspecMapper.to_domain_event`` decides. Raises for a topic that names no class."""
    return _decoding(topic)[1]


T = TypeVar("T")

_JSON_KINDS = {ord("["): "an array", ord('"'): "a string", ord("n"): "null"}


def stored_object(state: bytes, decode: Callable[[bytes], T]) -> tuple[T | None, str | None]:
    """A stored state decoded by ``decode``, or None and why it is not a JSON object, in one
    line: a row written by hand (the mapper writes only objects), which readers show as
    unreadable rather than fail on.

    ``decode`` decides how far the JSON is checked: ``msgspec.json.decode`` reads it all
    (the UTF-8 in its strings, its numbers' range), a ``msgspec.Raw`` decoder its shape only.
    """
    try:
        data = decode(state)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as error:
        # UnicodeDecodeError: msgspec's for a string that is not UTF-8, no DecodeError
        reason = " ".join(str(error).split()) or type(error).__name__
        return None, f"the stored state is not JSON: {reason}"
    first = state.lstrip()[:1]  # decoded: JSON, whose first character says what it is
    if first != b"{":
        kind = _JSON_KINDS.get(first[0], "a boolean" if first in (b"t", b"f") else "a number")
        return None, f"the stored state is not a JSON object: it is {kind}"
    return data, None


def event_type_name(topic: str) -> str:
    """What auditors see as an event's type: its class name, e.g. ``CreditsSpent``."""
    return topic.rsplit(".", 1)[-1].rsplit(":", 1)[-1]


class MsgspecMapper(Mapper[Any]):
    """A ``Mapper`` that encodes with msgspec: about twice as fast as the JSON transcoder."""

    def __init__(self) -> None:
        super().__init__(transcoder=None)  # type: ignore[arg-type]

    def to_stored_event(self, domain_event: DomainEventProtocol[Any]) -> StoredEvent:
        """Encode one domain event for the store."""
        topic, class_version = _encoding(type(domain_event))
        state = domain_event.__dict__.copy()
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        if class_version > 1:
            state["class_version"] = class_version
        # The library's frozen dataclass, its fields given whole as its __dict__ (all four,
        # in its order): its __init__ sets each through object.__setattr__ (a spend's
        # repository.writes() 30.3k → 24.7k instructions, callgrind).
        stored = _new(StoredEvent)
        _set_stored_dict(
            stored,
            {
                "originator_id": originator_id,
                "originator_version": originator_version,
                "topic": topic,
                "state": _encode(state),
            },
        )
        return stored

    def to_domain_event(self, stored_event: StoredEvent | RecordedEvent | ReplayedEvent) -> Any:
        """Decode one stored event, upcasting older shapes to the current class."""
        cls, fast = _decoding(stored_event.topic)
        if fast is not None:
            try:
                event = fast(
                    stored_event.state, stored_event.originator_id, stored_event.originator_version
                )
            except msgspec.ValidationError:
                event = None  # the general path decides, and says what is wrong
            if event is not None:
                return event
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
