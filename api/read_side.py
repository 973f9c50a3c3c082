"""Where the reads of the views go, and how a client reads its own writes.

Commands, and the answers they give, always use the primary (``DATABASE_URL``); reads
there take their connections from the reads' share of its pool (``read_connections``,
api/database.py), the rest being the commands'.
The views (balances, purchases, statement lines) and the auditors' event feeds
are read from the standby when ``DATABASE_READ_URL`` names one, else from the
primary. The rule, for clients (docs/scaling.md):

* Every answer to a command carries ``Ledger-Position: N``, the position in the
  store its answer stands at (its last event's, or the head's for an answer that
  wrote nothing: a replayed idempotency key, a reset already done).
* A read that sends ``Ledger-Min-Position: N`` is answered from views that have
  applied position N: the standby's once they have (waiting up to ``READ_WAIT``),
  else the primary's. If even the primary's are not there by then, the balance is
  answered from the write side (always current) and lists as the views stand. The
  event feeds, read from the store, wait so for the store to let readers pass N.
* A read without it takes the standby as it is (usually milliseconds behind).
* A standby that refuses, times out or is cut off is left alone for
  ``STANDBY_RETRY`` seconds: reads go to the primary meanwhile, with no error.
* So is a standby whose views have not reached where the primary's were
  ``MAX_STANDBY_LAG`` seconds ago (its replay stopped or slow), until they have.

Each routed read says where it was answered from in ``Ledger-Read-From``, and one answered
from views that had not applied what it waited for (a list, which has no write side to
turn to, while the projector is stopped or behind) says so in ``Ledger-Views-Behind: true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import asyncpg
import msgspec

from api.database import _connect, describe, nothing_to_reset
from api.headers import RepeatedHeader, only_header
from api.metrics import view_reads
from ledger.request_scope import RequestScope, get_current_scope
from ledger.store.event_store import DATABASE_ERRORS, EventStore, visible_head
from ledger.store.read_connections import Pool
from ledger.text import unsigned_number
from projections.queries import Views
from projections.runner import all_projections

if TYPE_CHECKING:  # the ASGI types alone: the command line reads views without Litestar
    from litestar.types import (
        ASGIApp,
        HTTPResponseBodyEvent,
        HTTPResponseStartEvent,
        Receive,
        Scope,
        Send,
    )

log = logging.getLogger(__name__)

T = TypeVar("T")

POSITION_HEADER = "Ledger-Position"
MIN_POSITION_HEADER = "Ledger-Min-Position"
_MIN_POSITION_NAME = MIN_POSITION_HEADER.lower().encode()
MIN_POSITION_DIGITS = 19
"""The most digits a ``Ledger-Min-Position`` may have (a longer one is 422 before ``int``
reads it); ``MAX_MIN_POSITION``, the largest position taken, is said by them (the API's
document gives it as the header's ``maximum``, api/openapi.py)."""
MAX_MIN_POSITION = 10**MIN_POSITION_DIGITS - 1
READ_FROM_HEADER = "Ledger-Read-From"
VIEWS_BEHIND_HEADER = "Ledger-Views-Behind"

READ_WAIT = 1.0
"""How long a read with Ledger-Min-Position waits for the views to apply it."""
POLL_SECONDS = 0.005
"""How often a database's view positions are read while a request waits on them."""
STANDBY_TIMEOUT = 2.0
"""Connecting to the standby, and each read there: longer, and the read goes to the primary."""
STANDBY_RETRY = 2.0
"""How long reads leave a failed standby alone before trying it again."""
MAX_STANDBY_LAG = 5.0
"""A standby whose views have not reached where the primary's were this long ago is left
alone until they have: a standby answers while its replay stands still (paused, or cut
from a primary that no longer keeps the WAL it needs), and reads without a position
showed its balances, however old, for as long as it did."""
LAG_CHECK_SECONDS = 1.0
"""How often reads compare the standby's view positions with the primary's."""

# Refused, unreachable, timed out (TimeoutError is an OSError), shutting down, starting,
# a conflict with recovery, a connection cut off mid-operation.
STANDBY_FAILURES = DATABASE_ERRORS


@dataclass
class ReadRequest:
    """One HTTP request's read requirement and where its reads went."""

    min_position: int = 0
    read_from: str | None = None
    caught_up: bool = True
    """False when a read's views had not applied ``min_position`` in time."""
    behind: bool = False
    """True when the answer was read from those views all the same (``caught_up`` False and
    no write side answered instead): the edge says so in ``Ledger-Views-Behind``."""


def _this_request() -> ReadRequest | None:
    """The request's ``ReadRequest``, its scope's ``reads`` (ledger/request_scope.py): None
    when no scope, or one without (a command run outside an HTTP request)."""
    held = get_current_scope()
    return held.reads if held is not None else None


class ViewProgress:
    """How far one database's views are, read by one poller while requests wait on it."""

    def __init__(self, pool: Pool, names: list[str]) -> None:
        self.pool = pool
        self.names = names
        self.applied = 0
        """The lowest position of the views when last read (only grows)."""
        self.error: BaseException | None = None
        """Why the last read of the positions failed (None: it did not)."""
        self._tick = asyncio.Event()
        self._waiting = 0
        self._task: asyncio.Task[None] | None = None

    async def reached(self, position: int, deadline: float) -> bool:
        """Whether the views apply ``position`` before ``deadline`` (monotonic time)."""
        if self.applied >= position:
            return True
        if time.monotonic() >= deadline:
            # No time left to wait (a standby's wait took it): one look, not the last one's
            # (nothing looked while the standby answered: it may be long ago).
            with contextlib.suppress(*STANDBY_FAILURES):
                self.applied = max(self.applied, await self.read())
            return self.applied >= position
        self._waiting += 1
        if self._task is None:
            self.error = None
            self._task = asyncio.create_task(self._poll())
        try:
            while self.applied < position:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.error is not None:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._tick.wait(), remaining)
            return True
        finally:
            self._waiting -= 1

    async def read(self) -> int:
        """The views' lowest position now (0 while one of them has no row yet)."""
        found = await self.pool.fetchval(
            """SELECT CASE WHEN count(*) = $2 THEN min(position) ELSE 0 END
               FROM projection_positions WHERE name = any($1)""",
            self.names,
            len(self.names),
            timeout=STANDBY_TIMEOUT,
        )
        return int(found or 0)

    async def _poll(self) -> None:
        try:
            while self._waiting and self.error is None:
                try:
                    self.applied = max(self.applied, await self.read())
                except STANDBY_FAILURES as error:
                    self.error = error
                tick, self._tick = self._tick, asyncio.Event()
                tick.set()
                await asyncio.sleep(POLL_SECONDS)
        finally:
            self._task = None


class StoreProgress(ViewProgress):
    """How far one database's event store may be read in commit order (``visible_head``):
    what the event feeds answer from, whatever the views have applied."""

    def __init__(self, pool: Pool) -> None:
        super().__init__(pool, [])

    async def read(self) -> int:
        """The last position a reader in commit order may pass now."""
        async with self.pool.acquire(timeout=STANDBY_TIMEOUT) as connection:
            return await asyncio.wait_for(visible_head(connection), STANDBY_TIMEOUT)


class Source:
    """A database the views can be read from."""

    def __init__(self, name: str, pool: Pool, names: list[str]) -> None:
        self.name = name
        self.pool = pool
        self.views = Views(pool)
        self.store = EventStore(pool)
        self.progress = ViewProgress(pool, names)
        self.store_progress = StoreProgress(pool)


class ReadSide:
    """Runs view reads on the standby or the primary (see the module)."""

    def __init__(self, primary: Pool, standby: asyncpg.Pool | None = None) -> None:
        names = sorted(p.name for p in all_projections())
        self.primary = Source("primary", primary, names)
        self.standby = None if standby is None else Source("standby", standby, names)
        self._standby_pool = standby
        self._standby_down_until = 0.0
        self.standby_lagging = False
        self._primary_marks: deque[tuple[float, int]] = deque()
        self._lag_checked_at = -LAG_CHECK_SECONDS
        self._lag_check: asyncio.Task[None] | None = None

    async def run(
        self, read: Callable[[Source], Awaitable[T]], *, at_least: int = 0, of_store: bool = False
    ) -> T:
        """``read`` on the database chosen for this request; the primary if the standby fails.

        ``at_least``: a position the views should have applied, as ``Ledger-Min-Position``
        (the larger of the two is waited for). ``of_store``: ``read`` reads the event store
        in commit order (the event feeds), not the views: the position is waited for there,
        so a feed neither waits on a projector that is behind nor answers without an event
        the store has not let readers pass yet."""
        request = _this_request() or ReadRequest()
        wanted = max(request.min_position, at_least)
        deadline = time.monotonic() + READ_WAIT
        self._check_lag_soon()
        usable = time.monotonic() >= self._standby_down_until and not self.standby_lagging
        standby = self.standby if usable else None
        if standby is not None:
            progress = standby.store_progress if of_store else standby.progress
            if not wanted or await progress.reached(wanted, deadline):
                try:
                    result = await asyncio.wait_for(read(standby), STANDBY_TIMEOUT)
                except STANDBY_FAILURES as error:
                    await self._standby_failed(error)
                else:
                    request.read_from = standby.name
                    view_reads[standby.name].inc()
                    return result
            elif progress.error is not None:
                await self._standby_failed(progress.error)
        if wanted:
            progress = self.primary.store_progress if of_store else self.primary.progress
            request.caught_up = await progress.reached(wanted, deadline)
            request.behind = not request.caught_up
        request.read_from = self.primary.name
        result = await read(self.primary)
        view_reads[self.primary.name].inc()
        return result

    def _check_lag_soon(self) -> None:
        """Compare the standby's views with the primary's in the background, at most once
        every ``LAG_CHECK_SECONDS``."""
        if self.standby is None or self._lag_check is not None:
            return
        now = time.monotonic()
        if now - self._lag_checked_at < LAG_CHECK_SECONDS:
            return
        self._lag_checked_at = now
        self._lag_check = asyncio.create_task(self._check_lag(self.standby))

    async def _check_lag(self, standby: Source) -> None:
        try:
            primary_at = await self.primary.progress.read()
            now = time.monotonic()
            marks = self._primary_marks
            marks.append((now, primary_at))
            # Kept: the newest mark at least MAX_STANDBY_LAG old, and those after it.
            while len(marks) > 1 and marks[1][0] <= now - MAX_STANDBY_LAG:
                marks.popleft()
            standby_at = await standby.progress.read()
        except STANDBY_FAILURES:
            return  # the reads find out (a failing standby is left alone as before)
        finally:
            self._lag_check = None
        since, then = marks[0]
        lagging = since <= now - MAX_STANDBY_LAG and standby_at < then
        if lagging and not self.standby_lagging:
            log.warning(
                "standby lagging: its views are at position %d, the primary's were at %d "
                "%.0f s ago: reads go to the primary until it catches up",
                standby_at,
                then,
                now - since,
            )
        elif self.standby_lagging and not lagging:
            log.info(
                "standby caught up (its views at position %d): reads go to it again", standby_at
            )
        self.standby_lagging = lagging

    async def _standby_failed(self, error: BaseException) -> None:
        if time.monotonic() >= self._standby_down_until:
            log.warning(
                "standby failed (%s: %s): reads go to the primary for %.0f s",
                type(error).__name__,
                error,
                STANDBY_RETRY,
            )
        self._standby_down_until = time.monotonic() + STANDBY_RETRY
        if self._standby_pool is not None:
            # Connections that may hang on a cut network are not reused.
            await self._standby_pool.expire_connections()


def views_caught_up() -> bool:
    """Whether this request's view reads had applied its Ledger-Min-Position."""
    request = _this_request()
    return request is None or request.caught_up


def answered_from_the_write_side() -> None:
    """This request is answered from the write side (always current) instead of its views
    that were behind: its answer is not marked ``Ledger-Views-Behind``."""
    request = _this_request()
    if request is not None:
        request.behind = False


@asynccontextmanager
async def open_standby_pool(read_url: str | None) -> AsyncIterator[asyncpg.Pool | None]:
    """A pool on the standby at ``read_url`` (None when not given).

    It connects only when a read needs it: the API starts, and answers, while the
    standby is down.
    """
    if read_url is None:
        yield None
        return
    standby = await asyncpg.create_pool(
        read_url,
        min_size=0,
        max_size=10,
        connect=_connect,
        timeout=STANDBY_TIMEOUT,
        command_timeout=STANDBY_TIMEOUT,
        server_settings={"application_name": "ledger-reads"},
        reset=nothing_to_reset,  # as the primary's pool: reads leave no session state
    )
    log.info(
        "view reads: the standby at %s (the primary when it lags or fails)", describe(read_url)
    )
    try:
        yield standby
    finally:
        standby.terminate()


def _invalid_min_position(message: str) -> bytes:
    return msgspec.json.encode({"message": message, "errors": {MIN_POSITION_HEADER: [message]}})


_NOT_A_POSITION = f"The {MIN_POSITION_HEADER} header must be a whole number of at least 0."
_REPEATED_POSITION = f"The {MIN_POSITION_HEADER} header must be given once."


class ReadsOfRequest:
    """``with ReadsOfRequest() as request:`` the ``ReadRequest`` of what runs in it, in a
    request scope of its own (api/edge.py puts one in the scope it enters a request)."""

    __slots__ = ("_scope",)

    def __enter__(self) -> ReadRequest:
        self._scope = RequestScope().__enter__()
        request = self._scope.reads = ReadRequest()
        return request

    def __exit__(self, *_: object) -> None:
        self._scope.__exit__()


def consistency_headers(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: ``Ledger-Min-Position`` in (see the module), checked once Litestar
    has routed the request (a path no route takes is 404 whatever it sends), on the API's
    routes only (``_takes_a_position``). The answer's
    ``Ledger-Position`` and ``Ledger-Read-From`` are the edge's (api/edge.py): it wraps
    ``send`` once for all it adds."""

    # Not a coroutine of its own: it hands back the app's, or the refusal's (one frame fewer
    # a request).
    def with_min_position(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        try:
            raw = only_header(scope, _MIN_POSITION_NAME) if scope["type"] == "http" else None
        except RepeatedHeader:  # two different positions: which one is meant is unknown
            if not _takes_a_position(scope):
                return app(scope, receive, send)
            return _refuse_min_position(send, _REPEATED_POSITION)
        if raw is None or not _takes_a_position(scope):
            return app(scope, receive, send)
        position = unsigned_number(raw.strip(), MIN_POSITION_DIGITS)
        if position is None:
            return _refuse_min_position(send, _NOT_A_POSITION)
        request = _this_request()
        if request is not None:  # the edge's
            request.min_position = position
            return app(scope, receive, send)
        return _with_own_request(app, scope, receive, send, position)

    return with_min_position


_STRIPE_WEBHOOK = "/v1/stripe/webhook"


def _takes_a_position(scope: Scope) -> bool:
    """Whether the routed request is one of the API's reads or commands (``/v1/...``), which
    read ``Ledger-Min-Position``. The operations routes (the contract's /healthz is 200
    while the process lives), the documentation, the pages and the Stripe webhook (200 for
    every verified event) read no views and ignore it: a header a proxy adds is no 422."""
    template: str = scope.get("path_template", "")
    return template.startswith("/v1/") and template != _STRIPE_WEBHOOK


async def _with_own_request(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, min_position: int
) -> None:
    """``app`` in a ``ReadRequest`` of its own (no edge made one: a test's bare app)."""
    with ReadsOfRequest() as request:
        request.min_position = min_position
        await app(scope, receive, send)


async def _refuse_min_position(send: Send, message: str) -> None:
    """The 422 of a ``Ledger-Min-Position`` header that says no one position (with its
    length, as Litestar's answers: without one uvicorn sends it chunked, to HTTP/1.0 too)."""
    refusal = _invalid_min_position(message)
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 422,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(refusal)).encode()),
        ],
    }
    body: HTTPResponseBodyEvent = {
        "type": "http.response.body",
        "body": refusal,
        "more_body": False,
    }
    await send(start)
    await send(body)
