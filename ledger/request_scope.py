"""What one request's commands and reads note for it, in one context variable.

The HTTP edge (api/edge.py) enters a ``RequestScope`` a request. Within it the commands
note the positions their answers stand at and whether an answer was one given before
(``Ledger-Position``, ``Idempotent-Replayed``) and the JSON a claim recorded of an answer
(written again as its body: ``ledger.unit_of_work.answer_json``), the reads wait for the reads'
connections once in all (ledger/store/read_connections.py), and the HTTP side keeps its
read requirement (``reads``: api/read_side.py's ``ReadRequest``). One context variable for all
of it: each one set and reset costs a request ~1.6k instructions (callgrind, of a spend's
~490k), and these were four.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar, Token
from typing import Any


class RequestScope:
    """``with RequestScope() as scope:``: what the commands and reads run within noted."""

    __slots__ = ("_token", "deadline", "highest", "reads", "recorded", "replayed", "task")

    def __init__(self) -> None:
        self.highest = 0
        """The highest position the answers given within stand at (0: none yet)."""
        self.replayed = False
        """Whether an answer given within was the one recorded earlier for the same request."""
        self.deadline: float | None = None
        """The loop's time by which the reads' connections must have come (None: none waited)."""
        self.task: asyncio.Task[object] | None = None
        """Whose reads wait once: a task started meanwhile (a poller that outlives the
        request) carries the same context, and waits as long as its own reads need."""
        self.reads: Any = None
        """The HTTP side's (api/read_side.py's ``ReadRequest``: ledger/ imports nothing of api/)."""
        self.recorded: tuple[object, bytes] | None = None
        """The last answer committed within with a claim, and the JSON the claim recorded of
        it (``ledger.unit_of_work.answer_json``)."""

    def note(self, position: int) -> None:
        self.highest = max(self.highest, position)

    def __enter__(self) -> RequestScope:
        self.task = asyncio.current_task()
        self._token: Token[RequestScope | None] = current_scope.set(self)
        return self

    def __exit__(self, *_: object) -> None:
        current_scope.reset(self._token)


current_scope: ContextVar[RequestScope | None] = ContextVar("ledger_request_scope", default=None)
get_current_scope = current_scope.get
"""``current_scope.get``, bound once: CPython 3.11 compiles a method call on a name an import made as an
attribute load, binding the method at each call (~500 instructions)."""
