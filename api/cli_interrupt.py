"""A Ctrl-C ends ``ledger`` with one line, not a traceback, whenever it comes (and a reader
that went away ends it by SIGPIPE: ``end_by_signal``).

api/cli.py imports this module before anything else: its other imports take most of a
command's start (some 0.3 s), and a Ctrl-C meanwhile printed a KeyboardInterrupt
traceback of import machinery. Python's own ending for an unhandled KeyboardInterrupt
is kept (the interpreter shuts down, then ends itself by SIGINT: a shell says 130, and a
script running the command stops too); only the traceback gives way to click's line.
It imports nothing but what the interpreter has loaded before it, so as to be in place at once.
"""

from __future__ import annotations

import atexit
import os
import sys
from types import TracebackType

ABORTED = "Aborted!"
"""What click says of a Ctrl-C, and so what ``ledger`` says of one at any moment."""

_previous = sys.excepthook
_end_by: list[int] = []
"""The signal the process ends by once the interpreter has shut down (``end_by_signal``)."""


def came_of_ctrl_c(error: BaseException) -> bool:
    """Whether ``error`` is a Ctrl-C's ``KeyboardInterrupt`` or was raised because of one (its
    cause, or what was being handled when it came, or one of a group's): Python 3.11 wraps
    an exception raised in ``__set_name__`` in a RuntimeError, so a Ctrl-C while a module
    made its classes was "unexpected error: RuntimeError: Error calling __set_name__ …" or
    that traceback; a clean-up cut short by one raises its own error."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        found = todo.pop()
        if id(found) in seen:
            continue
        seen.add(id(found))
        if isinstance(found, KeyboardInterrupt):
            return True
        if isinstance(found, BaseExceptionGroup):
            todo.extend(found.exceptions)
        todo.extend(e for e in (found.__cause__, found.__context__) if e is not None)
    return False


def _one_line_for_ctrl_c(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    if not came_of_ctrl_c(error):
        _previous(kind, error, traceback)
        return
    if not issubclass(kind, KeyboardInterrupt):
        import signal

        end_by_signal(signal.SIGINT)  # as Python ends on a KeyboardInterrupt of its own
    try:
        # On a new line: the terminal has echoed ^C where the cursor was.
        sys.stderr.write(f"\n{ABORTED}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # no stderr left to say it on
        pass


def end_by_signal(signum: int) -> None:
    """End the process by ``signum`` (its default action) once the interpreter has shut
    down, whatever exit code it is given: as Python ends by SIGINT after a KeyboardInterrupt,
    and a Unix tool by SIGPIPE when its reader has gone (``ls | head -1``)."""
    _end_by[:] = [signum]


def _ending_by_signal() -> None:
    """At exit, after every other exit function (registered first, it runs last)."""
    if not _end_by:
        return
    import contextlib
    import signal

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    signal.signal(_end_by[0], signal.SIG_DFL)
    os.kill(os.getpid(), _end_by[0])


sys.excepthook = _one_line_for_ctrl_c
atexit.register(_ending_by_signal)
