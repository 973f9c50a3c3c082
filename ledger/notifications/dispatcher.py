"""The dispatcher: sends due deliveries, signed, and records every attempt.

Runs in the projector's process (``ledger project``, which ``ledger serve``
starts). Several may run at once, in one database: claims skip rows another
dispatcher holds. All state is in tables, so a restart loses nothing; a
delivery in flight when a process dies is sent again after its lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import httpx

from ledger.failing_loop import FailingLoop
from ledger.notifications import DELIVERIES_CHANNEL
from ledger.notifications.addresses import NonPublicAddress, WebhookTransport
from ledger.notifications.endpoints import MalformedURL
from ledger.notifications.outbox import (
    DEFAULT_SCHEDULE,
    LEASE_SECONDS,
    DueDelivery,
    claim_due,
    record_attempt,
    seconds_until_due,
)
from ledger.notifications.signing import SIGNATURE_HEADER, signature_header
from ledger.notifications.url_form import why_not_taken
from ledger.store.event_store import DATABASE_ERRORS
from ledger.store.wakeups import Listening, wait_for_either
from ledger.surprises import in_one_line

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 1.0
"""Longest sleep between looks at the outbox; NOTIFY wakes the dispatcher sooner."""
CONCURRENCY = 16
"""Requests in flight at once that are still expected to be answered soon, per dispatcher."""
PER_ENDPOINT = 4
"""The most requests in flight to one endpoint, stalled ones included: a receiver that hangs
holds this many for the timeout, and the other endpoints' deliveries go on in the rest."""
STALLED_SECONDS = 2.0
"""A request unanswered this long gives its slot back (it goes on until the timeout): four
receivers that hang would otherwise hold all ``CONCURRENCY`` slots, and the receivers that
answer would wait for the timeout. A healthy receiver answers well within it."""
MOST_OPEN = 4 * CONCURRENCY
"""Requests in flight at once, stalled ones included: what bounds a dispatcher's sockets
when many receivers hang (``MOST_OPEN / PER_ENDPOINT`` of them hold every one). Below the
100 connections of ``WebhookTransport``'s pool: past those a request would wait in the pool."""
USER_AGENT = "credit-ledger-webhooks/1"
ERROR_TEXT_BYTES = 200
"""Of a refusal's body, what an attempt's error keeps."""
BODY_READ_LIMIT = 64 * 1024
"""An answer's body is read up to this much, so that its connection can carry the next
delivery; past it, the connection is closed instead."""


class Dispatcher:
    """Claims due deliveries, POSTs them and records what happened, until stopped."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        database_url: str | None = None,
        *,
        schedule: Sequence[float] = DEFAULT_SCHEDULE,
        timeout: float = TIMEOUT_SECONDS,
        poll_seconds: float = POLL_SECONDS,
        allow_private: bool = False,
    ) -> None:
        self.pool = pool
        self.database_url = database_url
        self.schedule = tuple(schedule)
        self.timeout = timeout
        self.poll_seconds = poll_seconds
        self.lease_seconds = max(LEASE_SECONDS, timeout + 5)
        self.allow_private = allow_private
        """Whether receivers may be on non-public addresses (see addresses.py)."""
        self._wake = asyncio.Event()
        self._in_flight: dict[asyncio.Task[None], tuple[str, float]] = {}
        """Each request's task, with the endpoint it goes to and when it started (loop time)."""
        self._failing = FailingLoop(log, "webhook dispatcher")

    async def _say_endpoints_not_sent_to(self) -> None:
        """One warning at the start naming each enabled endpoint whose URL registration
        refuses (``why_not_taken``): stored before that rule, it is never sent to, and each
        of its deliveries fails at once; without this, only those failures said so."""
        try:
            rows = await self.pool.fetch(
                "SELECT endpoint_id, url FROM webhook_endpoints WHERE disabled_at IS NULL "
                "ORDER BY position"
            )
        except Exception as error:  # a warning's look only: it never stops the dispatcher
            # A database's error or a surprise: the outbox's first look says it, in one line
            # (FailingLoop), and retries.
            log.debug("endpoints not looked at as the dispatcher starts: %r", error)
            return
        refused = [
            f"{row['endpoint_id']} ({why})"
            for row in rows
            if (why := why_not_taken(row["url"])) is not None
        ]
        if refused:
            log.warning(
                "webhook endpoints never sent to, their URLs refused by registration: %s; "
                "register each corrected and disable it (docs/notifications.md)",
                "; ".join(refused),
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver what is due until ``stop`` is set; then finish the requests in flight."""
        listening = (
            None
            if self.database_url is None
            else Listening(
                self.database_url,
                DELIVERIES_CHANNEL,
                self._wake,
                who="dispatcher",
                poll_seconds=POLL_SECONDS,
            )
        )
        if listening is not None:
            await listening.keep()
        try:
            async with httpx.AsyncClient(
                timeout=self.timeout,
                # The answer's body is only drained, not read: no inflating a compressed one.
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
                # Every connection is checked where it is made (addresses.py); no proxy
                # from the environment, which would hide the receiver's address.
                transport=WebhookTransport(allow_private=self.allow_private),
                trust_env=False,
            ) as client:
                log.info("webhook dispatcher started")
                await self._say_endpoints_not_sent_to()
                while not stop.is_set():
                    self._wake.clear()
                    if listening is not None:
                        await listening.keep()  # again, if the server restarted or was away
                    try:
                        started = await self._start_due(client)
                        wait = await self._seconds_to_wait() if not started else 0.0
                    except DATABASE_ERRORS as error:
                        # Said once, then now and then while it lasts: each second, it buried
                        # every other line of the log.
                        self._failing.failed(
                            logging.WARNING,
                            f"dispatcher could not reach the outbox (will retry): {error}",
                        )
                        started, wait = 0, self.poll_seconds
                    except Exception as error:  # a surprise must not end deliveries
                        self._failing.failed(
                            logging.ERROR,
                            "dispatcher failed to look at the outbox (will retry): "
                            + in_one_line(error),
                        )
                        log.debug("dispatcher failed: the traceback", exc_info=error)
                        started, wait = 0, self.poll_seconds
                    else:
                        self._failing.succeeded()
                    if wait > 0:
                        await wait_for_either(self._wake, stop, wait)
                    elif started == 0:
                        # Nothing could be started (every slot busy): wait for one to free up.
                        await wait_for_either(self._wake, stop, self.poll_seconds)
                if self._in_flight:
                    await asyncio.gather(*self._in_flight, return_exceptions=True)
        finally:
            if listening is not None:
                await listening.close()

    def _free_slots(self) -> int:
        """Slots for new requests: those stalled count only against ``MOST_OPEN``."""
        now = asyncio.get_running_loop().time()
        answering = sum(1 for _, since in self._in_flight.values() if now - since < STALLED_SECONDS)
        return min(CONCURRENCY - answering, MOST_OPEN - len(self._in_flight))

    async def _start_due(self, client: httpx.AsyncClient) -> int:
        free = self._free_slots()
        if free <= 0:
            return 0
        claimed = await claim_due(
            self.pool,
            free,
            self.lease_seconds,
            per_endpoint=PER_ENDPOINT,
            sending=Counter(endpoint_id for endpoint_id, _ in self._in_flight.values()),
        )
        started = asyncio.get_running_loop().time()
        for due in claimed:
            task = asyncio.create_task(self._deliver(client, due))
            self._in_flight[task] = (due.endpoint_id, started)
            task.add_done_callback(self._finished)
        return len(claimed)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("a delivery attempt could not be recorded: %s", error)
        self._wake.set()

    async def _seconds_to_wait(self) -> float:
        if self._free_slots() <= 0:
            return self.poll_seconds
        due_in = await seconds_until_due(self.pool)
        return self.poll_seconds if due_in is None else min(due_in, self.poll_seconds)

    async def _deliver(self, client: httpx.AsyncClient, due: DueDelivery) -> None:
        """One attempt: sign with the time of sending, POST, record the outcome."""
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature_header(due.payload, due.secret, timestamp),
        }
        started_at = datetime.now(UTC)
        started = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        schedule = self.schedule
        try:
            if (malformed := why_not_taken(due.url)) is not None:
                raise MalformedURL(malformed)
            status_code, text = await self._post(client, due, headers)
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}: {text}".rstrip(": ")
        except MalformedURL as refused:  # nothing was sent, nor ever will be
            # An endpoint stored before its URL's form was checked where it is registered
            # (or written past the registry): its URL never changes, so no retry could send
            # it, and one such as http://127.1/ or http://2130706433/ reaches another host
            # than it names (glibc reads them as 127.0.0.1). Failed at once, with the reason.
            error = (
                f"not sent: {refused}: registration refuses this URL, and no retry can send "
                f"it (register it corrected and disable {due.endpoint_id})"
            )[:500]
            schedule = ()
        except NonPublicAddress as refused:  # nothing was sent
            error = f"not sent: {refused}"[:500]
        except TimeoutError:
            error = f"TimeoutError: no whole answer within {self.timeout:g} s"
        except (
            Exception
        ) as failure:  # any failure to send (refused, timeout, bad URL) is an attempt
            error = f"{type(failure).__name__}: {failure}"[:500]
        duration_ms = round((time.monotonic() - started) * 1000)
        outcome = await record_attempt(
            self.pool,
            due,
            started_at=started_at,
            duration_ms=duration_ms,
            status_code=status_code,
            error=error,
            schedule=schedule,
        )
        # Retries to come are routine; one that ends them (failed) needs an operator.
        log.log(
            logging.WARNING if outcome == "failed" else logging.INFO,
            "delivery %s (%s) attempt %d to %s: %s",
            due.delivery_id,
            due.notification_id,
            due.attempt,
            due.endpoint_id,
            outcome if error is None else f"{outcome} ({error})",
        )

    async def _post(
        self, client: httpx.AsyncClient, due: DueDelivery, headers: dict[str, str]
    ) -> tuple[int, str]:
        """POST; (the status, the start of the body of a refusal).

        httpx's timeout bounds each read, not the whole answer: a receiver sending a byte now
        and then would hold the attempt (and a slot) forever and be sent it again at every
        lease. So the whole attempt has the timeout. A 2xx is the acknowledgement: its body
        is read (up to ``BODY_READ_LIMIT``) only so that the connection can carry the next
        delivery, and one still coming at the deadline, or cut off, is let go, the delivery
        done.
        """
        deadline = asyncio.get_running_loop().time() + self.timeout
        request = client.build_request(
            "POST", due.url, content=due.payload.encode(), headers=headers
        )
        async with asyncio.timeout_at(deadline):
            answer = await client.send(request, stream=True)
        try:
            async with asyncio.timeout_at(deadline):
                head = await _start_of_body(answer)
        except (TimeoutError, httpx.TransportError):
            if not answer.is_success:
                raise
            head = b""
        finally:
            await answer.aclose()
        return answer.status_code, "" if answer.is_success else head.decode(errors="replace")


async def _start_of_body(answer: httpx.Response) -> bytes:
    """The first ``ERROR_TEXT_BYTES`` of the body, read to its end or ``BODY_READ_LIMIT``.

    As sent, not decoded: 64 KiB of gzip inflate to 64 MiB in one chunk."""
    head, read = b"", 0
    async for chunk in answer.aiter_raw():
        head += chunk[: ERROR_TEXT_BYTES - len(head)]
        read += len(chunk)
        if read > BODY_READ_LIMIT:
            break
    return head
