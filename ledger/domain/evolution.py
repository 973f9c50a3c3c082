"""Which method of an aggregate applies which event, and how an aggregate records one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID


class Evolution:
    """A registry of an aggregate's event handlers: one dict lookup per event.

    ``@on(SomeEvent)`` above a method registers it; ``on.apply(aggregate, event)``
    calls it. An event type nobody registered fails loudly (KeyError): the
    aggregate must know every event of its stream.
    """

    def __init__(self) -> None:
        self._methods: dict[type, Callable[[Any, Any], None]] = {}

    def __call__(self, *event_types: type) -> Callable[[Callable[..., None]], Callable[..., None]]:
        def register(method: Callable[..., None]) -> Callable[..., None]:
            for event_type in event_types:
                self._methods[event_type] = method
            return method

        return register

    def apply(self, aggregate: Any, event: Any) -> None:
        self._methods[type(event)](aggregate, event)


class Records:
    """The ledger's aggregates' ``trigger_event``: the eventsourcing library's
    (``BaseAggregate.trigger_event``) without the steps that cannot apply to them, on the
    path of every command (4 % of a spend's in-process instructions, in callgrind).

    The library's looks up an explicit ``TOPIC`` (these classes have none: a ``getattr``
    that misses), copies ``kwargs`` (this call's own dict already) and calls the event's
    ``mutate``, which checks that the event's id and version are the aggregate's id and
    next version (here they are made so) before it applies the event and moves the
    aggregate's version and modification time. Left: the same event, applied the same
    way, in the same order, then pending. ``tests/unit/test_recording.py`` holds the two
    to the same events and states. One thing is added: an event is never stamped earlier
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
        kwargs["originator_id"] = self._id
        kwargs["originator_version"] = version
        timestamp = kwargs.get("timestamp") or event_class.create_timestamp()
        if timestamp < self._modified_on:
            # A stream's times never go back: a command whose time was taken before it
            # waited for its turn, or before another process's commit made it decide
            # again, records after events told later times (``as_of`` reads, statements
            # and the audit's expiry checks read a stream's times in its order).
            timestamp = self._modified_on
        kwargs["timestamp"] = timestamp
        try:
            event = event_class(**kwargs)
        except TypeError as error:
            raise TypeError(f"Can't construct event {event_class}: {error}") from None
        event.apply(self)  # before anything changes, as mutate() does, in case it raises
        self._version = version
        self._modified_on = event.timestamp
        self._pending_events.append(event)
