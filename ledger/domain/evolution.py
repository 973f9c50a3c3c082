"""Which method of an aggregate applies which event, and how an aggregate records one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.domain import DomainEvent


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
    """

    if TYPE_CHECKING:  # the library's Aggregate's
        _id: UUID
        _version: int
        _modified_on: datetime
        _pending_events: list[Any]

    def trigger_event(self, event_class: type[Any], **kwargs: Any) -> None:
        """Record an event of ``event_class`` with ``kwargs``: apply it, then keep it pending."""
        version = self._version + 1
        # In the dataclass's field order (the stored JSON's): its id, version and time first.
        values = {"originator_id": None, "originator_version": None, "timestamp": None, **kwargs}
        values["originator_id"] = self._id
        values["originator_version"] = version
        timestamp = kwargs.get("timestamp") or event_class.create_timestamp()
        if timestamp < self._modified_on:
            # A stream's times never go back: a command whose time was taken before it
            # waited for its turn, or before another process's commit made it decide
            # again, records after events told later times (``as_of`` reads, statements
            # and the audit's expiry checks read a stream's times in its order).
            timestamp = self._modified_on
        values["timestamp"] = timestamp
        event = made(event_class, values)
        event.apply(self)  # before anything changes, as mutate() does, in case it raises
        self._version = version
        self._modified_on = event.timestamp
        self._pending_events.append(event)


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
    if event_class.__post_init__ is not DomainEvent.__post_init__ or "__slots__" in vars(
        event_class
    ):
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
