"""Record events and POST them, signed, to the configured webhook endpoint; retry failures."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from stripe_standin.events import Event, make_event, signature_header

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0.2, 1.0, 3.0)
TIMEOUT_SECONDS = 10.0
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


class Webhooks:
    """The event log, the delivery log, and the sender (one ``httpx.AsyncClient`` per app)."""

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
        self._counts: dict[str, int] = {}
        self._client: httpx.AsyncClient | None = None
        self._retries: set[asyncio.Task[None]] = set()

    def configure(self, url: str | None, secret: str | None) -> None:
        """Where events go from now on; ``url=None`` only records them."""
        self.url, self.secret = url, secret

    async def start(self) -> None:
        """App start-up: open the HTTP client."""
        self._client = httpx.AsyncClient(timeout=TIMEOUT_SECONDS, trust_env=False)

    async def stop(self) -> None:
        """App shutdown: drop pending retries, close the client."""
        for task in list(self._retries):
            task.cancel()
        for task in list(self._retries):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def publish(self, event_type: str, obj: dict[str, Any], **details: Any) -> Event:
        """Record an event about ``obj`` and deliver it (retrying in the background on failure).

        ``details`` go to :func:`make_event` (``previous_attributes``, ``request_id``, ...).
        """
        event = make_event(event_type, obj, now=int(time.time()), **details)
        self.events[event.id] = event
        if self.url is not None and not (await self.attempt(event)).ok and self.retry_delays:
            task = asyncio.create_task(self._retry(event))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)
        return event

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
        return attempt

    async def _retry(self, event: Event) -> None:
        for delay in self.retry_delays:
            await asyncio.sleep(delay)
            if self.url is None or (await self.attempt(event)).ok:
                return
