"""A Ctrl-C ends ``ledger`` with one line, not a traceback, whenever it comes.

api/cli.py imports this module before anything else: its other imports take most of a
command's start (some 0.3 s), and a Ctrl-C meanwhile printed a KeyboardInterrupt
traceback of import machinery. Python's own ending for an unhandled KeyboardInterrupt
is kept (the interpreter shuts down, then ends itself by SIGINT: a shell says 130, and a
script running the command stops too); only the traceback gives way to click's line.
It imports nothing but ``sys``, so as to be in place at once.
"""

from __future__ import annotations

import sys
from types import TracebackType

ABORTED = "Aborted!"
"""What click says of a Ctrl-C, and so what ``ledger`` says of one at any moment."""

_previous = sys.excepthook


def _one_line_for_ctrl_c(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    if not issubclass(kind, KeyboardInterrupt):
        _previous(kind, error, traceback)
        return
    try:
        # On a new line: the terminal has echoed ^C where the cursor was.
        sys.stderr.write(f"\n{ABORTED}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # no stderr left to say it on
        pass


sys.excepthook = _one_line_for_ctrl_c
