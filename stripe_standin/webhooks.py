"""Record events and POST them, signed, to the configured webhook endpoint; retry failures.

Tests may hold events of chosen types back (recorded, not delivered) and release them later,
in any order, to deliver a refund before the ``checkout.session.completed`` it belongs to.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from stripe_standin.events import Event, make_event, signature_header

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0.2, 1.0, 3.0)
# After a restart, deliveries that never got a 2xx answer start again this long after start-up:
# the ledger runs the stand-in inside its own start-up, before it listens for webhooks.
RESUME_DELAY_SECONDS = 1.0
TIMEOUT_SECONDS = 10.0
HOLD_ALL = "*"
_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    "Accept": "*/*; q=0.5, application/xml",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt: the target's status, or the error when there was no answer."""

    event_id: str
    attempt: int
    status: int | None
    error: str | None
    url: str | None
    at: int

    @property
    def ok(self) -> bool:
        return _ok(self.status)

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "attempt": self.attempt,
            "status": self.status,
            "error": self.error,
            "url": self.url,
            "at": self.at,
        }


def _ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


class NotHeld(LookupError):
    """``release`` was asked for an event that is not held back (unknown, or already released)."""

    def __init__(self, event_ids: list[str]) -> None:
        super().__init__(f"not held: {', '.join(event_ids)}")
        self.event_ids = event_ids


class Webhooks:
    """The event log, the delivery log, held-back events, and the sender.

    ``pending`` keeps, in order, the events recorded for delivery that no attempt has yet
    delivered (2xx): they are saved with the state and delivered again after a restart.
    ``on_change`` runs after every change worth saving (the state file's writer).
    """

    def __init__(
        self,
        url: str | None = None,
        secret: str | None = None,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    ) -> None:
        self.url = url
        self.secret = secret
        self.retry_delays = tuple(retry_delays)
        self.events: dict[str, Event] = {}  # in creation order
        self.attempts: list[Attempt] = []
        self.held_types: set[str] = set()  # ``HOLD_ALL`` holds every type
        self.held: list[str] = []  # ids of held events, in the order they happened
        self.pending: dict[str, None] = {}  # an ordered set of event ids
        self.on_change: Callable[[], None] = _nothing
        self._counts: dict[str, int] = {}
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def configure(self, url: str | None, secret: str | None) -> None:
        """Where events go from now on; ``url=None`` only records them."""
        self.url, self.secret = url, secret
        self.on_change()

    def restore(self, attempts: Iterable[Attempt]) -> None:
        """Put back the delivery log read from a state file (attempt numbers continue)."""
        self.attempts = list(attempts)
        for attempt in self.attempts:
            self._counts[attempt.event_id] = max(
                self._counts.get(attempt.event_id, 0), attempt.attempt
            )

    async def start(self) -> None:
        """App start-up: open the HTTP client; resume deliveries a restart interrupted."""
        self._client = httpx.AsyncClient(timeout=TIMEOUT_SECONDS, trust_env=False)
        if self.pending:
            self._spawn(self._resume(list(self.pending)))

    async def stop(self) -> None:
        """App shutdown: drop pending retries (``pending`` keeps them), close the client."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def holds(self, event_type: str) -> bool:
        """Whether events of this type are held back when they happen."""
        return HOLD_ALL in self.held_types or event_type in self.held_types

    def hold(self, types: Iterable[str]) -> None:
        """Hold back every later event of these types (replaces the set; empty: hold nothing).

        Events held already stay held until released.
        """
        self.held_types = set(types)
        self.on_change()

    def record(self, event_type: str, obj: dict[str, Any], **details: Any) -> Event:
        """Record an event about ``obj`` as it is now, to deliver (or hold) it afterwards.

        ``details`` go to :func:`make_event` (``previous_attributes``, ``request_id``, ...).
        The state is saved before any delivery, so a restart never forgets a sent event.
        """
        event = make_event(event_type, obj, now=int(time.time()), **details)
        self.events[event.id] = event
        if self.holds(event_type):
            self.held.append(event.id)
        elif self.url is not None:
            self.pending[event.id] = None
        self.on_change()
        return event

    async def publish(self, event_type: str, obj: dict[str, Any], **details: Any) -> Event:
        """Record an event and deliver it now (retrying in the background on failure)."""
        event = self.record(event_type, obj, **details)
        if event.id in self.pending:
            await self.deliver(event)
        return event

    async def deliver(self, event: Event) -> Attempt:
        """One attempt now; on failure, retries after each of ``retry_delays`` in the background."""
        attempt = await self.attempt(event)
        if not attempt.ok and self.retry_delays:
            self._spawn(self._retry(event))
        return attempt

    def deliver_later(self, event: Event) -> None:
        """Deliver in a background task (for changes made outside any request)."""
        if event.id in self.pending:
            self._spawn(self._deliver_quietly(event))

    async def release(self, event_ids: Sequence[str] | None = None) -> list[Attempt]:
        """Deliver held events: all of them in the order they happened, or these in this order.

        Raises :class:`NotHeld` (and delivers nothing) if any of ``event_ids`` is not held.
        """
        chosen = list(self.held) if event_ids is None else list(event_ids)
        not_held = [event_id for event_id in chosen if event_id not in self.held]
        if not_held or len(set(chosen)) != len(chosen):
            raise NotHeld(not_held or sorted({e for e in chosen if chosen.count(e) > 1}))
        for event_id in chosen:
            self.held.remove(event_id)
            if self.url is not None:
                self.pending[event_id] = None
        self.on_change()
        return [await self.deliver(self.events[event_id]) for event_id in chosen]

    async def attempt(self, event: Event) -> Attempt:
        """POST the event once with a fresh signature; record and return the attempt."""
        url, secret = self.url, self.secret
        number = self._counts[event.id] = self._counts.get(event.id, 0) + 1
        now = int(time.time())
        status: int | None = None
        error: str | None = None
        if url is None:
            error = "no webhook URL is configured"
        elif self._client is None:
            error = "the stand-in is not running"
        else:
            headers = dict(_HEADERS)
            if secret is not None:
                headers["Stripe-Signature"] = signature_header(event.body, secret, now)
            try:
                response = await self._client.post(url, content=event.body, headers=headers)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                error = None if _ok(status) else f"HTTP {status}"
        attempt = Attempt(event.id, number, status, error, url, now)
        self.attempts.append(attempt)
        if attempt.ok:
            self.pending.pop(event.id, None)
        self.on_change()
        return attempt

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_quietly(self, event: Event) -> None:
        await self.deliver(event)

    async def _retry(self, event: Event) -> None:
        for delay in self.retry_delays:
            await asyncio.sleep(delay)
            if event.id not in self.pending or self.url is None:
                return  # delivered meanwhile (a resend), or nowhere to send it
            if (await self.attempt(event)).ok:
                return

    async def _resume(self, event_ids: list[str]) -> None:
        await asyncio.sleep(RESUME_DELAY_SECONDS)
        for event_id in event_ids:
            if event_id in self.pending and self.url is not None:
                await self.deliver(self.events[event_id])


def _nothing() -> None:
    return None
