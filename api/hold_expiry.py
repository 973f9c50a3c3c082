"""Releases holds that reached their expiry, in the background of every API process.

The holds view says which holds are due; the account decides again on its
own events, so several processes sweeping at once record each expiry once
(the loser's append conflicts, it reloads and finds the hold settled). Due
holds are found from the view, not from memory, so a restart loses none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from ledger.commands import SettleHold
from ledger.domain.errors import HoldAlreadySettled, HoldHasExpired, HoldNotDue, HoldNotFound
from ledger.service import Ledger
from projections.queries import Views

log = logging.getLogger(__name__)

SWEEP_SECONDS = 1.0
SWEEP_BATCH = 200


class HoldExpirySweeper:
    """Every ``interval`` seconds, records the expiry of each open hold past it."""

    def __init__(self, views: Views, ledger: Ledger, interval: float = SWEEP_SECONDS) -> None:
        self.views = views
        self.ledger = ledger
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def sweep(self) -> int:
        """Expire every hold due now; return how many expiries this call recorded."""
        expired = 0
        while due := await self.views.due_holds(datetime.now(UTC), SWEEP_BATCH):
            recorded = 0
            for hold in due:
                try:
                    await self.ledger.execute(
                        SettleHold(account_id=hold.account_id, hold_id=hold.hold_id, outcome="expired")
                    )
                except (HoldNotFound, HoldAlreadySettled, HoldHasExpired, HoldNotDue):
                    continue  # settled meanwhile, by another request or process
                recorded += 1
            expired += recorded
            if len(due) < SWEEP_BATCH or not recorded:
                break  # the rest waits for the view to see these expiries
        return expired

    async def _run(self) -> None:
        while True:
            try:
                if count := await self.sweep():
                    log.info("released %d expired hold(s)", count)
            except Exception:  # a database outage must not end the sweeping for good
                log.warning("hold expiry sweep failed; trying again shortly", exc_info=True)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hold-expiry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
