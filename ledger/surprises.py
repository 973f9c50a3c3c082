"""An error nobody expected, said in one line: what it is and where in this code it was raised.

The background loops (the projector, the expiry sweeper, the dispatcher, the reconciler)
and the ``ledger`` commands say a surprise in one line, as they say a database's error; its
traceback goes to the log at DEBUG, for whoever turns that on.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

_OURS = str(Path(__file__).resolve().parents[1])


def in_one_line(error: BaseException) -> str:
    """``KeyError: 'g_1' (at projections/grants.py:148)``: the error's type, its message and
    the last line of this project's code it went through (none: no place is named)."""
    said = " ".join(str(error).split())
    line = f"{type(error).__name__}: {said}" if said else type(error).__name__
    where = None
    for frame in traceback.extract_tb(error.__traceback__):
        path = str(Path(frame.filename).resolve())
        if path.startswith(_OURS + "/") and "site-packages" not in path:
            where = f"{path[len(_OURS) + 1 :]}:{frame.lineno}"
    return f"{line} (at {where})" if where else line


def log_surprise(log: logging.Logger, what: str, error: BaseException) -> None:
    """``what: <the error in one line>`` at ERROR; the traceback at DEBUG."""
    log.error("%s: %s", what, in_one_line(error))
    log.debug("%s: the traceback", what, exc_info=error)
