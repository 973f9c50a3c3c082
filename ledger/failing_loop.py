"""A background loop's failure, said when it starts, now and then while it lasts, and when it ends.

A loop that tries again every second and logs each failure buries every other line of the log
under the same one for as long as the failure lasts (the database away, a view's table gone).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

SAY_AGAIN_SECONDS = 600.0
"""How often a failure that lasts, for the same reason, is said again at its level (at DEBUG
at each try in between)."""


def said_lately(said: tuple[str, float] | None, line: str, now: float, every: float) -> bool:
    """Whether ``line`` is the one last said at its level (``said``: that line and when) and
    less than ``every`` seconds ago: then it is said again at DEBUG only."""
    return said is not None and said[0] == line and now - said[1] < every


class FailingLoop:
    """What a loop says of its tries: ``failed`` after each failed one, ``succeeded`` after
    each that worked. A failure is said at its level the first time, when its line changes
    and every ``SAY_AGAIN_SECONDS`` while it lasts; the first try that works after it says
    how long it lasted."""

    def __init__(
        self, log: logging.Logger, what: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = log
        self._what = what
        self._clock = clock
        self._since: float | None = None
        self._failures = 0
        self._said: tuple[str, float] | None = None
        """The failure's line as last said at its level, and when."""

    def failed(self, level: int, line: str) -> None:
        """One more try failed, for the reason ``line`` says."""
        now = self._clock()
        if self._since is None:
            self._since = now
        self._failures += 1
        again = said_lately(self._said, line, now, SAY_AGAIN_SECONDS)
        if not again:
            self._said = (line, now)
        minutes = f"{SAY_AGAIN_SECONDS / 60:.0f} minutes"
        self._log.log(
            logging.DEBUG if again else level,
            "%s%s",
            line,
            "" if again else f"; said again every {minutes} while it lasts",
        )

    def succeeded(self) -> None:
        """A try worked: the end of the failure, if there was one, is said."""
        if self._since is None:
            return
        self._log.warning(
            "%s recovered: %d %s failed over %.0f s",
            self._what,
            self._failures,
            "try" if self._failures == 1 else "tries",
            self._clock() - self._since,
        )
        self._since, self._failures, self._said = None, 0, None
