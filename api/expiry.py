"""Records expiries that are due (holds and grants), in the background of every API process.

The views say what is due; the account decides again on its own events, so
several processes sweeping at once record each expiry once (the loser's append
conflicts, it reloads and finds the hold settled or the grant closed). Due
expiries are found from the views, not from memory, so a restart loses none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime

from ledger.commands import ExpireGrant, SettleHold
from ledger.domain.errors import (
    GrantClosed,
    GrantNotDue,
    GrantNotFound,
    HoldAlreadySettled,
    HoldHasExpired,
    HoldNotDue,
    HoldNotFound,
)
from ledger.failing_loop import FailingLoop, said_lately
from ledger.service import Ledger
from ledger.store.event_store import DATABASE_ERRORS, ConcurrencyConflict
from ledger.store.repository import UnreadableStream
from ledger.surprises import in_one_line
from ledger.unit_of_work import answer_positions
from projections.queries import Views

log = logging.getLogger(__name__)

SWEEP_SECONDS = 1.0
SWEEP_BATCH = 200

SAY_AGAIN_SECONDS = 3600.0
"""How often an account passed over for the same reason is said again at ERROR while it
lasts (at DEBUG every sweep): once a second, its line buried every other (the overdue
expiry stays in ``ledger_expiry_overdue_seconds`` meanwhile)."""

_SETTLED_MEANWHILE = (
    HoldNotFound,
    HoldAlreadySettled,
    HoldHasExpired,
    HoldNotDue,
    GrantNotFound,
    GrantClosed,
    GrantNotDue,
)
"""Another request or process got there first."""

_Expiry = SettleHold | ExpireGrant


class ExpirySweeper:
    """Every ``interval`` seconds, records the expiry of each open hold and grant past it."""

    def __init__(
        self,
        views: Views,
        ledger: Ledger,
        interval: float = SWEEP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.views = views
        self.ledger = ledger
        self.interval = interval
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._said: dict[str, tuple[str, float]] = {}
        """Each account passed over: why, as last said at ERROR, and when."""
        self._passed_over: set[str] = set()
        """The accounts passed over in the sweep under way."""
        self._failing = FailingLoop(log, "expiry sweep", clock)

    async def sweep(self) -> dict[str, int]:
        """Record every expiry due now; how many of its commands, listed for a hold and for a
        grant, recorded expiries. Each records every expiry due on its account (as they fell due),
        as any command does, so that what its notifications tell counts none of them."""
        self._passed_over = set()
        swept = {
            "holds": await self._sweep(self._due_holds),
            "grants": await self._sweep(self._due_grants),
        }
        # One loaded again (repaired), or with nothing due any more, is said again if it
        # is passed over again.
        self._said = {a: said for a, said in self._said.items() if a in self._passed_over}
        return swept

    def _say_passed_over(self, account_id: str, error: UnreadableStream) -> None:
        """At ERROR the first time, when the reason changes, and every ``SAY_AGAIN_SECONDS``;
        at DEBUG in between."""
        self._passed_over.add(account_id)
        why, now = str(error), self._clock()
        again = said_lately(self._said.get(account_id), why, now, SAY_AGAIN_SECONDS)
        if not again:
            self._said[account_id] = (why, now)
        log.log(
            logging.DEBUG if again else logging.ERROR,
            "expiry sweep passed over %s: %s (see `ledger audit verify`)%s",
            account_id,
            why,
            "" if again else "; said again hourly while it lasts",
        )

    async def _due_holds(self, now: datetime, busy: Collection[str]) -> list[_Expiry]:
        due = await self.views.due_holds(now, SWEEP_BATCH, skipping=busy)
        return [
            SettleHold(account_id=h.account_id, hold_id=h.hold_id, outcome="expired") for h in due
        ]

    async def _due_grants(self, now: datetime, busy: Collection[str]) -> list[_Expiry]:
        due = await self.views.due_grants(now, SWEEP_BATCH, skipping=busy)
        return [ExpireGrant(account_id=g.account_id, grant_id=g.grant_id) for g in due]

    async def _sweep(
        self, due_commands: Callable[[datetime, Collection[str]], Awaitable[list[_Expiry]]]
    ) -> int:
        expired = 0
        busy: set[str] = set()  # accounts whose turn did not come: left for the next sweep
        while due := await due_commands(datetime.now(UTC), busy):
            recorded = 0
            busy_before = len(busy)
            for command in due:
                if command.account_id in busy:
                    continue
                try:
                    with answer_positions() as answered:
                        await self.ledger.execute(command)
                except _SETTLED_MEANWHILE:
                    continue
                except ConcurrencyConflict:
                    # The account stayed busy past its turn (or its conflicts): its expiries
                    # wait for the next sweep, and the other accounts' do not wait for them.
                    busy.add(command.account_id)
                    continue
                except UnreadableStream as error:
                    # Passed over as a busy one: listed soonest first, its expiry ended every
                    # sweep before the other accounts' were reached, for as long as it stayed.
                    self._say_passed_over(command.account_id, error)
                    busy.add(command.account_id)
                    continue
                if not answered.replayed:  # a hold's expiry recorded already (a view behind)
                    recorded += 1
            expired += recorded
            if len(due) < SWEEP_BATCH:
                break
            if not recorded and len(busy) == busy_before:
                break  # the rest waits for the views to see these expiries
            # Listed again without the busy accounts: a batch all of one of them would
            # otherwise hide every other account's expiries for as long as it stays busy.
        return expired

    async def _run(self) -> None:
        while True:
            await self.sweep_and_say()
            await asyncio.sleep(self.interval)

    async def sweep_and_say(self) -> None:
        """One sweep, and what it recorded or why it failed in the log: a failure that lasts
        is said once, then now and then (``FailingLoop``), and its end is said. None while
        the clock is too far off (the guard says so, ledger/clock_guard.py): every expiry
        would be refused."""
        if self.ledger.clock_guard.skewed:
            return
        try:
            swept = await self.sweep()
        except DATABASE_ERRORS as error:
            # The database away or restarting: a line, not a traceback.
            self._failing.failed(
                logging.WARNING, f"expiry sweep could not reach the database (will retry): {error}"
            )
            return
        except Exception as error:  # a surprise must not end the sweeping for good either
            self._failing.failed(
                logging.ERROR, f"expiry sweep failed (will retry): {in_one_line(error)}"
            )
            log.debug("expiry sweep failed: the traceback", exc_info=error)
            return
        self._failing.succeeded()
        if swept["holds"]:
            log.info(
                "released %d expired hold(s), with the expiries due on their accounts",
                swept["holds"],
            )
        if swept["grants"]:
            log.info(
                "recorded the expiry of %d grant(s), with the expiries due on their accounts",
                swept["grants"],
            )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="expiry-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
