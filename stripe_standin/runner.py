"""Run the stand-in in-process with uvicorn, on a free port of 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

import uvicorn
from litestar import Litestar

from stripe_standin.app import create_standin_app
from stripe_standin.events import Event
from stripe_standin.expiry import DEFAULT_CHECK_SECONDS
from stripe_standin.state import StandinState, get_state
from stripe_standin.validate import MIN_EXPIRY_SECONDS
from stripe_standin.webhooks import DEFAULT_RETRY_DELAYS, Attempt


class RunningStandin:
    """Async context manager: starts the server on enter, stops it on exit."""

    def __init__(
        self,
        port: int = 0,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        *,
        webhook_retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        state_file: Path | None = None,
        expiry_check_seconds: float = DEFAULT_CHECK_SECONDS,
        min_expiry_seconds: int = MIN_EXPIRY_SECONDS,
        host: str = "127.0.0.1",
        public_base_url: str | None = None,
    ) -> None:
        self._port = port
        self._host = host
        self._public_base_url = public_base_url
        self._webhook_url = webhook_url
        self._webhook_secret = webhook_secret
        self._retry_delays = tuple(webhook_retry_delays)
        self._state_file = state_file
        self._expiry_check_seconds = expiry_check_seconds
        self._min_expiry_seconds = min_expiry_seconds
        self._app: Litestar | None = None
        self._base_url: str | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: the bound address."""
        if self._base_url is None:
            raise RuntimeError("the stand-in is not running")
        return self._base_url

    @property
    def app(self) -> Litestar:
        if self._app is None:
            raise RuntimeError("the stand-in is not running")
        return self._app

    @property
    def state(self) -> StandinState:
        """The running app's in-memory state (sessions, charges, events, delivery attempts)."""
        return get_state(self.app)

    def configure_webhooks(self, url: str | None, secret: str | None) -> None:
        """Send every event from now on to ``url``, signed with ``secret`` (a ``whsec_...``).

        Callable before or after start; ``url=None`` records events without delivering them.
        """
        self._webhook_url, self._webhook_secret = url, secret
        if self._app is not None:
            get_state(self._app).webhooks.configure(url, secret)

    def hold_webhooks(self, types: Iterable[str]) -> None:
        """Record later events of these types without delivering them (``"*"``: every type).

        Replaces the held types; ``hold_webhooks([])`` holds nothing more (held events stay
        held until :meth:`release_webhooks`). Same as ``POST /_standin/webhooks/hold``.
        """
        self.state.webhooks.hold(types)

    @property
    def held_events(self) -> list[Event]:
        """The events held back and not yet released, in the order they happened."""
        webhooks = self.state.webhooks
        return [webhooks.events[event_id] for event_id in webhooks.held]

    async def release_webhooks(self, event_ids: Sequence[str] | None = None) -> list[Attempt]:
        """Deliver held events (all, in the order they happened; or these, in this order).

        Returns each first delivery attempt; failures are retried in the background as usual.
        Raises ``NotHeld`` if one of ``event_ids`` is not held. Same as
        ``POST /_standin/webhooks/release``.
        """
        return await self.state.webhooks.release(event_ids)

    async def __aenter__(self) -> RunningStandin:
        # Binding ourselves tells us the port before the app, which needs its own URL, exists.
        # asyncio sets TCP_NODELAY only on IPPROTO_TCP sockets; without it, +40 ms per request.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        try:
            await self._start(sock)
        except BaseException:
            await self._stop()
            raise
        return self

    async def _start(self, sock: socket.socket) -> None:
        self._base_url = self._public_base_url or f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._app = create_standin_app(
            public_base_url=self._base_url,
            webhook_url=self._webhook_url,
            webhook_secret=self._webhook_secret,
            webhook_retry_delays=self._retry_delays,
            state_file=self._state_file,
            expiry_check_seconds=self._expiry_check_seconds,
            min_expiry_seconds=self._min_expiry_seconds,
        )
        # log_config=None: uvicorn's own would take its loggers, the API's in the same
        # process (`ledger serve` in development) included, away from the process's handler.
        config = uvicorn.Config(
            self._app,
            host=self._host,
            port=self._port,
            log_level="warning",
            log_config=None,
            lifespan="on",
        )
        self._server = _InProcessServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                raise RuntimeError("the stand-in's server did not start")
            await asyncio.sleep(0.01)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        try:
            if self._server is not None:
                self._server.should_exit = True
            if self._task is not None:
                await self._task
        finally:
            if self._sock is not None:
                self._sock.close()
            self._server = self._task = self._sock = None


class _InProcessServer(uvicorn.Server):
    """uvicorn leaving the process's signals alone: whoever runs the stand-in stops it by
    leaving ``run_standin``'s block. (uvicorn's own would take SIGINT and SIGTERM from
    the program it runs in, `ledger serve` or pytest, until it stopped.)"""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def run_standin(
    port: int = 0,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    *,
    webhook_retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    state_file: Path | None = None,
    expiry_check_seconds: float = DEFAULT_CHECK_SECONDS,
    min_expiry_seconds: int = MIN_EXPIRY_SECONDS,
    host: str = "127.0.0.1",
    public_base_url: str | None = None,
) -> RunningStandin:
    """``async with run_standin() as standin:`` serves the stand-in at ``standin.base_url``.

    ``state_file``: keep the state in this file across restarts (default: memory only).
    ``expiry_check_seconds``: how often open sessions past ``expires_at`` are expired.
    ``min_expiry_seconds``: the shortest ``expires_at`` accepted (Stripe's 30 minutes unless
    a test asks for less).
    ``host``: the address to listen on; ``public_base_url``: the stand-in's address as
    browsers and the service reach it (default ``http://127.0.0.1:<port>``).
    """
    return RunningStandin(
        port,
        webhook_url,
        webhook_secret,
        webhook_retry_delays=webhook_retry_delays,
        state_file=state_file,
        expiry_check_seconds=expiry_check_seconds,
        min_expiry_seconds=min_expiry_seconds,
        host=host,
        public_base_url=public_base_url,
    )
