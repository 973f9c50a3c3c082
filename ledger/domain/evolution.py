"""Which method of an aggregate applies which event."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


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
