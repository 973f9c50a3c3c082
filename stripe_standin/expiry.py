"""Sessions expire on their own, as at Stripe: a background task sends ``checkout.session.expired``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from stripe_standin.events import Event
from stripe_standin.state import StandinState

logger = logging.getLogger(__name__)

DEFAULT_CHECK_SECONDS = 1.0


class ExpirySweeper:
    """Every ``interval`` seconds, expires the open sessions whose ``expires_at`` has passed."""

    def __init__(self, state: StandinState, interval: float = DEFAULT_CHECK_SECONDS) -> None:
        if interval <= 0:
            raise ValueError("the expiry check interval must be positive")
        self.state = state
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def sweep(self) -> list[Event]:
        """One pass: expire what is due and start delivering its events."""
        events = self.state.expire_due(int(time.time()))
        for event in events:
            self.state.webhooks.deliver_later(event)
        return events

    async def start(self) -> None:
        """App start-up (after the webhooks' client exists)."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """App shutdown (before the webhooks' client closes)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                self.sweep()
            except Exception:
                # A failed pass (say, a full disk under the state file) must not end expiry.
                logger.exception("stripe stand-in: expiring sessions failed")
            await asyncio.sleep(self.interval)
