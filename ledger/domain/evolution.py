"""Which method of an aggregate applies which event, and how an aggregate records one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.domain import DomainEvent

from ledger.domain.events import _Evolves, command_time


class Evolution:
    """A registry of an aggregate's event handlers: one dict lookup per event.

    ``@on(SomeEvent)`` above a method registers it; ``evolve = on.evolve`` in the class
    makes the aggregate's ``evolve``, which calls it. An event type nobody registered fails
    loudly (KeyError): the aggregate must know every event of its stream.
    """

    def __init__(self) -> None:
        self._methods: dict[type, Callable[[Any, Any], None]] = {}
        methods = self._methods

        # A function, not a method of this class: the aggregate's own ``evolve``, so an
        # event reaches its handler in one call, and ``ledger audit verify`` can tell an
        # aggregate whose ``evolve`` is this one (is) and call the handler itself.
        def evolve(aggregate: Any, event: Any) -> None:
            methods[type(event)](aggregate, event)

        self.evolve = evolve

    def __call__(self, *event_types: type) -> Callable[[Callable[..., None]], Callable[..., None]]:
        def register(method: Callable[..., None]) -> Callable[..., None]:
            for event_type in event_types:
                self._methods[event_type] = method
            return method

        return register

    def method(self, event_type: type) -> Callable[[Any, Any], None] | None:
        """The method ``evolve`` calls for an event of exactly ``event_type``; None if none
        is registered."""
        return self._methods.get(event_type)


class Records:
    """The ledger's aggregates' ``trigger_event``: the eventsourcing library's
    (``BaseAggregate.trigger_event``) without the steps that cannot apply to them, on the
    path of every command (4 % of a spend's in-process instructions, in callgrind).

    The library's looks up an explicit ``TOPIC`` (these classes have none: a ``getattr``
    that misses), copies ``kwargs`` (this call's own dict already) and calls the event's
    ``mutate``, which checks that the event's id and version are the aggregate's id and
    next version (here they are made so) before it applies the event and moves the
    aggregate's version and modification time. Left: the same event, applied the same
    way, in the same order, then pending; and the event is made without its dataclass's
    ``__init__`` (``made``), with the same refusals. ``tests/unit/test_recording.py`` holds
    the two to the same events and states. One thing is added: an event is never stamped earlier
    than the aggregate's last one (its time is raised to that one's).

    Each event class records through a function written for it (``_recorder``), which
    takes its fields from ``kwargs`` by name; a call whose fields do not fit takes the
    general road (``recorded_generally``), which refuses as ``made`` does.
    """

    if TYPE_CHECKING:  # the library's Aggregate's
        _id: UUID
        _version: int
        _modified_on: datetime
        _pending_events: list[Any]

    def trigger_event(self, event_class: type[Any], **kwargs: Any) -> None:
        """Record an event of ``event_class`` with ``kwargs``: apply it, then keep it pending."""
        if not (_RECORDERS.get(event_class) or _recorder(event_class))(self, kwargs):
            recorded_generally(self, event_class, kwargs)


def recorded_generally(aggregate: Any, event_class: type[Any], kwargs: dict[str, Any]) -> None:
    """``Records.trigger_event`` for any event class and any ``kwargs``: the road each class's
    own recorder (``_recorder``) is held to, and the one a class that checks more than the
    library's ``__post_init__`` takes (made by its ``__init__``, as the library makes it)."""
    version = aggregate._version + 1
    # In the dataclass's field order (the stored JSON's): its id, version and time first.
    values = {"originator_id": None, "originator_version": None, "timestamp": None, **kwargs}
    values["originator_id"] = aggregate._id
    values["originator_version"] = version
    timestamp = kwargs.get("timestamp") or event_class.create_timestamp()
    if timestamp < aggregate._modified_on:
        # A stream's times never go back: a command whose time was taken before it
        # waited for its turn, or before another process's commit made it decide
        # again, records after events told later times (``as_of`` reads, statements
        # and the audit's expiry checks read a stream's times in its order).
        timestamp = aggregate._modified_on
    values["timestamp"] = timestamp
    if _checks_more(event_class):  # made by the library's road: its own __init__
        try:
            event = event_class(**values)
        except TypeError as error:
            raise TypeError(f"Can't construct event {event_class}: {error}") from None
    else:
        event = made(event_class, values)
    event.apply(aggregate)  # before anything changes, as mutate() does, in case it raises
    aggregate._version = version
    aggregate._modified_on = event.timestamp
    aggregate._pending_events.append(event)


_Recorder = Callable[[Any, dict[str, Any]], bool]
_RECORDERS: dict[type, _Recorder] = {}


def _general(aggregate: Any, kwargs: dict[str, Any]) -> bool:
    """The recorder of a class no recorder is written for: the general road, always."""
    return False


def _recorder(event_class: type[Any]) -> _Recorder:
    """``recorded_generally`` written out for one event class (kept in ``_RECORDERS``), as
    ``dataclasses`` writes a class's ``__init__``: each field taken from ``kwargs`` by its
    name, straight into the event's ``__dict__`` in the class's order, with no loop, no
    check of the order, and, for the ledger's events (``_Evolves``), the command's time and
    the aggregate's ``evolve`` called without the event's methods in between. It answers
    False, having changed nothing, when ``kwargs`` has a field unknown or missing, or the
    aggregate's id is not a UUID: the general road then refuses. A class that checks more
    than the library's ``__post_init__`` has none: the general road makes it with its own
    ``__init__``, as the library does. Recording a spend's
    ``CreditsSpent`` 16.3k -> 13.9k instructions, a paid delivery's ``CheckoutPaid`` or
    ``CreditsPurchased`` 12.5k -> 9.3k (callgrind, their ``evolve`` handlers excluded)."""
    if _checks_more(event_class):
        _RECORDERS[event_class] = _general
        return _general
    names, defaults, set_dict = _FIELDS.get(event_class) or _fields(event_class)
    if names[:3] != ("originator_id", "originator_version", "timestamp"):
        _RECORDERS[event_class] = _general
        return _general
    own = names[3:]
    scope: dict[str, Any] = {
        "_event_class": event_class,
        "_new": object.__new__,
        "_set_dict": set_dict,
        "_UUID": UUID,
        "_create_timestamp": event_class.create_timestamp,
        "_command_time": command_time.get,
        "_wall_clock": DomainEvent.create_timestamp,
    }
    # Field values are read through ``kwargs`` only: no field's name is a name of this code.
    required = [name for name in own if name not in defaults]
    given = " + ".join(
        [str(len(required)), "('timestamp' in kwargs)"]
        + [f"({name!r} in kwargs)" for name in own if name in defaults]
    )
    values = ["'originator_id': originator_id", "'originator_version': version"]
    values.append("'timestamp': timestamp")
    for i, name in enumerate(own):
        if name in defaults:
            scope[f"_default_{i}"] = defaults[name]
            values.append(f"{name!r}: kwargs[{name!r}] if {name!r} in kwargs else _default_{i}()")
        else:
            values.append(f"{name!r}: kwargs[{name!r}]")
    if event_class.create_timestamp is _Evolves.create_timestamp:
        clock = "_command_time() or _wall_clock()"  # _Evolves.create_timestamp, written out
    else:
        clock = "_create_timestamp()"
    if event_class.apply is _Evolves.apply:
        apply = "aggregate.evolve(event)"  # _Evolves.apply, written out
    else:
        apply = "event.apply(aggregate)"
    source = f"""
def record_{event_class.__name__}(aggregate, kwargs):
    if len(kwargs) != {given}:
        return False
    originator_id = aggregate._id
    if not isinstance(originator_id, _UUID):
        return False
    version = aggregate._version + 1
    timestamp = kwargs.get('timestamp') or {clock}
    modified_on = aggregate._modified_on
    if timestamp < modified_on:
        timestamp = modified_on
    try:
        values = {{{", ".join(values)}}}
    except KeyError:
        return False
    event = _new(_event_class)
    _set_dict(event, values)
    {apply}
    aggregate._version = version
    aggregate._modified_on = timestamp
    aggregate._pending_events.append(event)
    return True
"""
    exec(source, scope)  # noqa: S102 (the source is made of the class's field names only)
    recorder: _Recorder = scope[f"record_{event_class.__name__}"]
    _RECORDERS[event_class] = recorder
    return recorder


def made(event_class: type[Any], values: dict[str, Any]) -> Any:
    """The event of ``event_class`` with these field values, as its dataclass ``__init__``
    would make it, with the same refusals (a field unknown or missing, an id not a UUID),
    but ``values`` given whole as its ``__dict__`` (as the mapper's decoder does): the
    frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` and
    runs the library's ``__post_init__``: with ``expire_due``'s early return, a spend's
    decision 73.7k → 60.3k instructions (callgrind)."""
    names, defaults, set_dict = _FIELDS.get(event_class) or _fields(event_class)
    if tuple(values) != names:  # a field left to its default, unknown, or out of order
        values = _in_field_order(event_class, values, names, defaults)
    if not isinstance(values["originator_id"], UUID):  # the library's __post_init__ check
        raise TypeError(
            f"{event_class} was initialized with a non-UUID originator_id: "
            f"{values['originator_id']!r}"
        )
    event = object.__new__(event_class)
    set_dict(event, values)  # past the frozen __setattr__, as dataclasses' own __init__ goes
    return event


_Fields = tuple[
    tuple[str, ...], dict[str, Callable[[], Any]], Callable[[Any, dict[str, Any]], None]
]
_FIELDS: dict[type, _Fields] = {}


def _fields(event_class: type[Any]) -> _Fields:
    """An event class's field names in order, how to make those with a default, and the
    setter of its instances' ``__dict__`` (kept in ``_FIELDS``). Only the library's
    ``__post_init__`` is run by ``made``: a class with its own, or whose instances keep no
    ``__dict__``, is refused, not made unchecked.

    The setter is the one of the ``__dict__`` descriptor its instances inherit:
    ``object.__setattr__(event, "__dict__", values)`` finds the same descriptor by a generic
    attribute lookup for every event (~800 instructions, callgrind)."""
    if _checks_more(event_class):
        raise TypeError(f"made() cannot make {event_class}: it checks more than the library's")
    names = []
    defaults: dict[str, Callable[[], Any]] = {}
    for field in dataclasses.fields(event_class):
        names.append(field.name)
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = _constant(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory
    owner = next(base for base in event_class.__mro__ if "__dict__" in vars(base))
    found = _FIELDS[event_class] = (tuple(names), defaults, vars(owner)["__dict__"].__set__)
    return found


def _checks_more(event_class: type[Any]) -> bool:
    """Whether ``event_class`` checks more than the library's ``__post_init__`` does (its own),
    or keeps no ``__dict__``: ``made`` cannot make it."""
    return event_class.__post_init__ is not DomainEvent.__post_init__ or "__slots__" in vars(
        event_class
    )


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


def _in_field_order(
    event_class: type[Any],
    values: dict[str, Any],
    names: tuple[str, ...],
    defaults: dict[str, Callable[[], Any]],
) -> dict[str, Any]:
    unknown = [name for name in values if name not in names]
    missing = [name for name in names if name not in values and name not in defaults]
    if unknown or missing:
        raise TypeError(
            f"Can't construct event {event_class}: "
            + "; ".join(
                [f"unexpected field {name!r}" for name in unknown]
                + [f"missing field {name!r}" for name in missing]
            )
        )
    return {name: values[name] if name in values else defaults[name]() for name in names}
