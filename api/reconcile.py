"""Reconciliation with Stripe, as ``ledger stripe reconcile`` and the service run it.

Pending purchases come from the purchases view; each is looked up at Stripe
through the SDK and what is found is applied as its webhook would have been
(ledger/reconcile.py). In the service it runs every ``LEDGER_RECONCILE_SECONDS``
(unset or 0: never), in one process at a time (an advisory lock), over the
purchases of the last ``RECONCILE_WINDOW``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from api.reconcile_defaults import DEFAULT_LIMIT, DEFAULT_OLDER_THAN, RECONCILE_WINDOW
from ledger.domain.account import in_utc_years
from ledger.ports import CheckoutLookup
from ledger.reconcile import PendingCheckout, Reconciled, reconcile
from ledger.store.event_store import DATABASE_ERRORS
from ledger.surprises import log_surprise
from ledger.text import decimal_number

if TYPE_CHECKING:
    from api.services import Services

log = logging.getLogger(__name__)

MAX_DURATION = timedelta(days=100 * 366)
"""The longest ``--since`` or ``--older-than``: further back is before any purchase."""

MAX_RECONCILE_SECONDS = 366 * 24 * 3600
"""A year (a sleep of 1e300 s overflows the event loop's clock)."""


class DurationTooLong(ValueError):
    """A duration in the right form, longer than ``MAX_DURATION``."""


# ASCII: \d takes any script's digits ('٣m' read as 3 minutes), \s any space.
_DURATION = re.compile(r"(\d+)\s*(s|m|min|h|d|w)", re.IGNORECASE | re.ASCII)
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``7d``, ``1w``, or a combination (``1h30m``); ``0`` is none."""
    cleaned = text.strip()
    if cleaned == "0":
        return timedelta(0)
    matched = list(_DURATION.finditer(cleaned))
    if not matched or "".join(m.group(0) for m in matched).replace(" ", "") != cleaned.replace(
        " ", ""
    ):
        raise ValueError(f"{text!r} is not a duration like 30m, 12h or 7d")
    seconds = sum(int(m[1]) * _UNITS[m[2].lower()] for m in matched)
    if seconds > MAX_DURATION.total_seconds():
        raise DurationTooLong(f"{text!r} is longer than {MAX_DURATION.days:,} days")
    return timedelta(seconds=seconds)


def parse_since(text: str, now: datetime) -> datetime:
    """A moment: a duration back from ``now`` (``7d``), a date (UTC midnight) or an RFC 3339 time."""
    try:
        return now - parse_duration(text)
    except DurationTooLong:
        raise  # a duration, too long: said as for --older-than, not "neither a duration"
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (7d, 12h) nor a date (2026-11-01) or time "
            "(2026-11-01T09:00:00Z)"
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if not in_utc_years(moment):
        raise ValueError(f"{text!r} is not between the years 1 and 9999 in UTC")
    return moment


def reconcile_seconds_from_env(env: Mapping[str, str] | None = None) -> float | None:
    """``LEDGER_RECONCILE_SECONDS``: how often the service reconciles (None: never)."""
    raw = (os.environ if env is None else env).get("LEDGER_RECONCILE_SECONDS", "").strip()
    if not raw:
        return None
    seconds = decimal_number(raw)
    if seconds is None or not (seconds == 0 or 1 <= seconds <= MAX_RECONCILE_SECONDS):
        raise ValueError(
            f"LEDGER_RECONCILE_SECONDS must be a number of seconds, 1 to "
            f"{MAX_RECONCILE_SECONDS:,} (0: never), not {raw!r}"
        )
    return seconds or None


def checkout_lookup(services: Services) -> CheckoutLookup:
    """The service's payment gateway, which can look sessions up at Stripe."""
    gateway = services.ledger.gateway
    if not hasattr(gateway, "look_up_checkout"):
        raise RuntimeError("this process has no Stripe gateway to reconcile with")
    return gateway  # type: ignore[return-value]


async def pending_checkouts(
    services: Services,
    *,
    since: datetime | None,
    older_than: timedelta = DEFAULT_OLDER_THAN,
    account_id: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[PendingCheckout]:
    """The purchases pending since ``since`` and created at least ``older_than`` ago, oldest
    first (at most ``limit``)."""
    now = datetime.now(UTC)
    pending = await services.views.pending_purchases(
        created_after=since, created_before=now - older_than, account_id=account_id, limit=limit
    )
    return [
        PendingCheckout(
            session_id=p.session_id,
            account_id=p.account_id,
            credits=p.credits,
            created_at=p.created_at,
        )
        for p in pending
    ]


async def reconcile_pending(
    services: Services,
    lookup: CheckoutLookup,
    *,
    since: datetime | None,
    older_than: timedelta = DEFAULT_OLDER_THAN,
    account_id: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[Reconciled]:
    """Reconcile the purchases ``pending_checkouts`` lists."""
    pending = await pending_checkouts(
        services, since=since, older_than=older_than, account_id=account_id, limit=limit
    )
    return await reconcile(services.ledger, lookup, pending)


class PeriodicReconciler:
    """Reconciles every ``interval`` seconds until stopped (``LEDGER_RECONCILE_SECONDS``)."""

    def __init__(
        self,
        services: Services,
        lookup: CheckoutLookup,
        interval: float,
        *,
        older_than: timedelta = DEFAULT_OLDER_THAN,
        account_id: str | None = None,
    ) -> None:
        self.services = services
        self.lookup = lookup
        self.interval = interval
        self.older_than = older_than
        self.account_id = account_id
        self.runs = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls, services: Services) -> PeriodicReconciler | None:
        """One running as ``LEDGER_RECONCILE_SECONDS`` asks, or None when it is off."""
        interval = reconcile_seconds_from_env()
        if interval is None:
            return None
        return cls(services, checkout_lookup(services), interval)

    def start(self) -> None:
        log.info(
            "reconciling pending purchases with Stripe every %g s (LEDGER_RECONCILE_SECONDS)",
            self.interval,
        )
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run_once(self) -> list[Reconciled] | None:
        """One run, unless another process is running one (then None)."""
        async with self.services.pool.acquire() as connection:
            # An advisory lock, through the owner's function (the service's role may call no
            # advisory lock function: ledger/store/sql/advisory_locks.sql).
            if not await connection.fetchval("SELECT take_reconcile_turn()"):
                return None
            try:
                done = await reconcile_pending(
                    self.services,
                    self.lookup,
                    since=datetime.now(UTC) - RECONCILE_WINDOW,
                    older_than=self.older_than,
                    account_id=self.account_id,
                )
            finally:
                await connection.execute("SELECT let_go_of_reconcile_turn()")
        self.runs += 1
        changed = [r for r in done if r.changed]
        if changed:
            log.warning(
                "reconcile: %d of %d pending purchases had a missed webhook and were applied",
                len(changed),
                len(done),
            )
        return done

    async def _run(self) -> None:
        while True:
            try:
                # Not while the clock is too far off: every payment would be refused
                # (ledger/clock_guard.py says so once); the next run looks again.
                if not self.services.ledger.clock_guard.skewed:
                    await self.run_once()
            except DATABASE_ERRORS as error:
                log.warning("reconcile: run failed (will try again): %s", error)
            except Exception as error:
                # A background loop: one bad run must not end the ones after it.
                log_surprise(log, "reconcile: run failed (will try again)", error)
            await asyncio.sleep(self.interval)
