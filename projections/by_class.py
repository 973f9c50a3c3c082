"""Tables of a value per event class (``table[type(event)]``), for the views and the
moves of ``projections.moves``; re-exported by ``projections.events``."""

from __future__ import annotations

from typing import Any


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
        self.exact: dict[type, Any] = dict(values)
        """The values decided so far, in a plain dict: ``exact[cls]`` costs ~200 instructions
        less than ``self[cls]`` (CPython 3.11 specialises the subscript of a plain dict
        only), but raises KeyError for a class not decided yet: then ask ``self[cls]``."""

    def __missing__(self, cls: type) -> Any:
        # Only the classes given are searched: a base already looked up holds the
        # default, which must not hide a value given for a later base.
        found = next((self.given[b] for b in cls.__mro__[1:] if b in self.given), self.default)
        self[cls] = self.exact[cls] = found
        return found


class WhichOf(ByEventClass):
    """Which of ``classes`` an event's class is (itself, or its nearest base among them),
    None if none, by ``table[type(event)]``: ``table.exact[type(event)] is AccountOpened``
    answers ``isinstance(event, AccountOpened)`` for a fraction of its cost (the events'
    metaclass is not ``type``, so each ``isinstance`` that fails costs ~900 instructions:
    two an event each in the balances and the notifications views, ~7 % of a rebuild)."""

    def __init__(self, *classes: type) -> None:
        super().__init__({cls: cls for cls in classes})


class EventKinds(ByEventClass):
    """Whether an event's class is one of ``kinds`` (or a subclass of one), by
    ``kinds[type(event)]``."""

    def __init__(self, *kinds: type) -> None:
        super().__init__(dict.fromkeys(kinds, True), default=False)
