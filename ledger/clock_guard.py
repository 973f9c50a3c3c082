"""Keeps a process whose clock is too far from the database's from recording anything.

Every event tells the time of the process that decided it (``Ledger.execute`` stamps the
command's ``at`` from its clock), and a stream's times never go back
(ledger/unit_of_work.py): one host whose clock ran a day ahead would stamp an account a
day ahead, and every later command on that account, from any host, would be decided at
that time, its grants and holds expired early, for good. So each process measures its
clock against PostgreSQL's (``check``: when its services open, then every
``CHECK_SECONDS`` in the background of the API) and, while the two are further apart
than the tolerance (``LEDGER_MAX_CLOCK_SKEW_SECONDS``), ``Ledger.execute`` refuses every
command with ``ClockSkewed`` before deciding it (nothing recorded; 503 at the HTTP edge)
and ``/readyz`` answers 503, so that a load balancer takes the host out. Reads go on.

A clock behind the database's is refused as well, though it harms less (streams' times
never go back, so its commands on streams others wrote are decided at their times): its
new streams would tell the past, its billing period and the expiries it finds due would
be judged at a past time, and an offset of seconds either way means the host's time
synchronisation is broken.

The offset is the process's clock at the midpoint of one ``SELECT clock_timestamp()``'s
round trip (by the monotonic clock) minus the database's answer; half the round trip is
how far off that can be, and only an offset beyond the tolerance by more than that counts.

A clock that steps between two checks (NTP or chrony stepping it, a host resumed from
suspend, someone setting it) is caught by the next command, not up to ``CHECK_SECONDS``
later: its commands would otherwise be stamped until then with a time far from the
database's (the audit's ``time-far-from-record``, and a stream's times never go back).
Each measurement notes how far the clock's reading is from the monotonic clock's; NTP
slews both at the same rate, so they only move apart by a step. A command compares the
two again, and one that finds them moved apart by more than ``STEP_SECONDS`` since the
measurement (``stepped``) measures again before deciding (``check_stepped``, once for all
the commands that found it), and is refused if the clock is now too far.

A command's cost is one comparison (``Ledger.execute``): the clock's reading less the
monotonic clock's between ``steady_from`` and ``steady_to``, which ``note`` sets from the
last measurement (an empty range while ``skewed``, so that the command then asks
``vouch``, which refuses it). Two clock reads, a subtraction: about 1,200 instructions of
the 442,000 a spend costs (bench/spend_instructions.py). A clock that goes off with the
monotonic one (a virtual machine paused, both its clocks behind once resumed, until its
time is corrected) shows no step: it is caught at the next check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from ledger.clock_skew import DEFAULT_MAX_SKEW_SECONDS
from ledger.ports import Clock, system_clock
from ledger.times import duration_in_one_unit

log = logging.getLogger(__name__)

CHECK_SECONDS = 5.0
"""How often the API measures its clock again: one query a process each time."""

CHECK_TIMEOUT_SECONDS = 2.0
"""A measurement that takes longer says nothing (and the state stays as it was)."""

STEP_SECONDS = 1.0
"""How far the clock may move from the monotonic one after a measurement before a command
measures again (``stepped``). Slewing moves the two apart by milliseconds between two
measurements (NTP slews at most 0.5 ms a second); ``LEDGER_MAX_CLOCK_SKEW_SECONDS`` is 1 s
at least, so a step that takes a clock from the database's to beyond it is noticed."""


class _Queries(Protocol):
    async def fetchval(self, query: str, *args: Any) -> Any: ...


class ClockSkewed(Exception):
    """This process's clock is too far from the database's: the command was refused, and
    nothing was recorded."""

    def __init__(self, offset: float, tolerance: float) -> None:
        self.offset = offset
        self.tolerance = tolerance
        super().__init__(describe(offset, tolerance))


def describe(offset: float, tolerance: float) -> str:
    """The offset in words, as the audit's ``time-far-from-record`` says how far an event's
    time is from its record (``duration_in_one_unit``: ``7.0 s``, ``24.0 hours``), with the
    tolerance it exceeds."""
    way = "ahead of" if offset > 0 else "behind"
    return (
        f"this host's clock is {duration_in_one_unit(abs(offset))} {way} the database's, "
        f"more than the {tolerance:g} s allowed (LEDGER_MAX_CLOCK_SKEW_SECONDS)"
    )


class ClockGuard:
    """The last measured offset of ``clock`` from the database's, and whether commands are
    refused for it (``skewed``). Unmeasured, nothing is refused."""

    def __init__(
        self, clock: Clock = system_clock, tolerance: float = DEFAULT_MAX_SKEW_SECONDS
    ) -> None:
        self.clock = clock
        self.seconds: Callable[[], float] = (
            time.time if clock is system_clock else lambda: clock().timestamp()
        )
        """``clock`` in seconds since the epoch: the system's read as a float, for a
        ``datetime``'s ``timestamp()`` would cost a command twice the whole check."""
        self.tolerance = tolerance
        self.offset: float | None = None
        """Seconds this process's clock is ahead of the database's (negative: behind)."""
        self.skewed = False
        self._wall_less_monotonic: float | None = None
        """The clock's reading less the monotonic clock's, in seconds, when last measured
        (None: unmeasured, and nothing is ``stepped``)."""
        self.steady_from, self.steady_to = -math.inf, math.inf
        """While neither ``skewed`` nor ``stepped``, ``seconds() - time.monotonic()`` is
        between these, and a command goes ahead without more (``Ledger.execute``);
        outside, it asks ``vouch``. Skewed, the range is empty; unmeasured, it is all."""
        self._remeasuring = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def refusal(self) -> ClockSkewed:
        """What a command is refused with while ``skewed`` (a new one each time)."""
        return ClockSkewed(self.offset or 0.0, self.tolerance)

    async def measure(self, database: _Queries) -> float:
        """Measure the offset once (one query) and note it; the offset."""
        started = time.monotonic()
        before = self.clock()
        database_time: datetime = await database.fetchval("SELECT clock_timestamp()")
        half = (time.monotonic() - started) / 2
        offset = (before - database_time).total_seconds() + half
        self._wall_less_monotonic = before.timestamp() - started
        self.note(offset, half)
        return offset

    def stepped(self) -> bool:
        """Whether the clock has moved from the monotonic clock by more than
        ``STEP_SECONDS`` since the last measurement (it stepped: ``check_stepped`` before
        recording anything at its time)."""
        before = self._wall_less_monotonic
        return before is not None and abs(self.seconds() - time.monotonic() - before) > (
            STEP_SECONDS
        )

    async def vouch(self, database: _Queries) -> None:
        """Before a command whose clock is outside ``steady_from``..``steady_to``: measure
        again if the clock ``stepped`` (``check_stepped``), then refuse it if ``skewed``."""
        if self.stepped():
            await self.check_stepped(database)
        if self.skewed:
            raise self.refusal()

    async def check_stepped(self, database: _Queries) -> None:
        """Measure again after the clock stepped: once for all the commands that found it
        ``stepped`` meanwhile (the others wait for that measurement). Should the database
        not answer in time, the offset is the last one moved by the step (the monotonic
        clock tells how far), so that a step beyond the tolerance is refused all the same."""
        async with self._remeasuring:
            now, monotonic = self.seconds(), time.monotonic()
            before = self._wall_less_monotonic
            moved = 0.0 if before is None else now - monotonic - before
            if abs(moved) <= STEP_SECONDS:
                return  # measured since (or never measured)
            log.warning(
                "this host's clock stepped %+.3f s since it was last measured against the "
                "database's: measured again before recording anything at it",
                moved,
            )
            offset = self.offset
            await self.check(database)
            if self.stepped() and offset is not None:  # not measured: estimated
                self._wall_less_monotonic = now - monotonic
                self.note(offset + moved)

    async def check(self, database: _Queries) -> None:
        """``measure``, and a measurement that fails or does not come in time leaves the
        state as it was (a database that does not answer refuses writes of its own)."""
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                await self.measure(database)
        except Exception as error:  # any failure: not measured this time
            log.debug("could not measure the clock against the database's: %r", error)

    def note(self, offset: float, uncertainty: float = 0.0) -> None:
        """Take a measured ``offset``; its start and end of being too large are logged once."""
        self.offset = offset
        skewed = abs(offset) - uncertainty > self.tolerance
        if skewed and not self.skewed:
            log.error(
                "%s: commands are refused (503, nothing recorded) and /readyz answers 503 "
                "until it is back within; fix this host's time synchronisation (NTP)",
                describe(offset, self.tolerance),
            )
        elif self.skewed and not skewed:
            log.warning(
                "this host's clock is back within %g s of the database's (%+.3f s): "
                "commands are taken again",
                self.tolerance,
                offset,
            )
        self.skewed = skewed
        before = self._wall_less_monotonic
        if skewed:
            self.steady_from, self.steady_to = math.inf, -math.inf
        elif before is None:
            self.steady_from, self.steady_to = -math.inf, math.inf
        else:
            self.steady_from, self.steady_to = before - STEP_SECONDS, before + STEP_SECONDS

    def start(self, database: _Queries, interval: float = CHECK_SECONDS) -> None:
        """Check every ``interval`` seconds in the background (``stop`` ends it)."""

        async def run() -> None:
            while True:
                await asyncio.sleep(interval)
                await self.check(database)

        if self._task is None:
            self._task = asyncio.create_task(run(), name="clock-guard")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
