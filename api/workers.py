"""``ledger serve --workers N``: N API processes accepting on the same sockets.

The parent binds the sockets (api/startup.py), builds the app, then forks the
workers before any event loop, thread or connection exists; each worker runs
its own uvicorn, lifespan, pool, caches and group committer on the inherited
sockets, and the kernel hands each connection to one of them. Several writers
on one account are what the store's optimistic concurrency already serialises
(a stale cache conflicts, reloads and decides again), so nothing is shared but
the database. The parent says "ready" once every worker listens, forwards
SIGTERM/SIGINT, and stops them all if one dies.

Metrics are per process unless ``PROMETHEUS_MULTIPROC_DIR`` names a folder they
share; ``serve`` sets one up when there is more than one worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from api.metrics import mark_process_started
from api.settings import web_concurrency
from api.startup import serve_on
from ledger.child_processes import stop_when_parent_ends

log = logging.getLogger("ledger")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _run_worker(
    app: Any, sockets: list[socket.socket], ready_pipe: int, first: bool, parent: int
) -> None:
    """In the child: serve until told to stop (or ``parent`` ends); never returns."""
    code = 0

    def say_ready(url: str) -> None:
        # With the event store as this worker connects to it (the service's role), which
        # only the workers know: the parent opens no connection before it forks them.
        os.write(ready_pipe, f"{url}\t{_event_store_of(app)}\n".encode())

    try:
        # A Ctrl-C reaches the whole process group, and the parent sends each worker
        # SIGTERM for it: until uvicorn takes both signals over, one is enough (two at
        # once cut short the first's clean-up: tracebacks of threading's locks).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # Forked with SIGTERM and SIGINT held back (serve_workers): one that came already
        # stops it here, inside this try, never in the parent's code that forked it.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        # A parent ended at once (SIGKILL) stops no worker: each stops by itself then, as on
        # its SIGTERM, and lets go of the port for the `ledger serve` started after it.
        stop_when_parent_ends(parent)
        # In development the demo account is the first worker's to open and to tell about
        # (each would say its "try it" lines again).
        app.state.demo_account_here = first
        mark_process_started()
        serve_on(app, sockets, say_ready, worker=True)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        log.exception("an API worker failed")
        code = 1
    finally:
        os._exit(code)


def _event_store_of(app: Any) -> str:
    """The event store a started worker's ``app`` connects to, without its password."""
    from api.database import describe

    services = app.state.get("services")
    return describe(services.database_url) if services is not None else ""


def serve_workers(
    app: Any,
    sockets: list[socket.socket],
    workers: int,
    on_ready: Callable[[str, str], None],
) -> int:
    """Fork ``workers`` processes serving ``app`` on ``sockets``; wait for them to end.
    ``on_ready(url, event_store)``: once they all listen, with the first's address and the
    event store it connects to (``describe``d: the service's role, no password).

    Returns 0 when they all stopped cleanly (after SIGTERM or Ctrl-C), 3 when one ended
    before they all listened (its start-up failed: one worker's exit code, as uvicorn's),
    else 1. A Ctrl-C (SIGINT) before they all listened raises KeyboardInterrupt once they
    have ended: "Aborted!" and the end by SIGINT, as one process's start-up cut short.
    """
    read_ready, write_ready = os.pipe()
    children: list[int] = []
    parent = os.getpid()
    stopping = False
    listening = False
    interrupted = False

    def stop(signum: int, _: object) -> None:
        nonlocal stopping, interrupted
        interrupted = interrupted or (signum == signal.SIGINT and not listening)
        if not stopping:
            log.info(
                "stopping… (%s): %d workers finish their requests",
                signal.Signals(signum).name,
                workers,
            )
        stopping = True
        for pid in children:
            _signal(pid, signal.SIGTERM)

    def all_listen(url: str, event_store: str) -> None:
        nonlocal listening
        listening = True
        on_ready(url, event_store)

    # Held back until each process has the handlers it stops by (a child, its try; this
    # process, ``stop``): a Ctrl-C just after a fork ran the parent's clean-up in the child.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        for index in range(workers):
            pid = os.fork()
            if pid == 0:
                os.close(read_ready)
                _run_worker(app, sockets, write_ready, first=index == 0, parent=parent)
            children.append(pid)
        os.close(write_ready)
        for sock in sockets:
            sock.close()  # the workers hold them; the parent accepts nothing
        previous = {s: signal.signal(s, stop) for s in _STOP_SIGNALS}
        log.info("starting %d API workers (pids %s)", workers, ", ".join(map(str, children)))
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    try:
        announced = _wait_until_ready(read_ready, workers, all_listen)
        code = _wait_for(children, announced, lambda: stopping, stop)
        if interrupted:
            raise KeyboardInterrupt
        return code
    finally:
        os.close(read_ready)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _wait_until_ready(read_ready: int, workers: int, on_ready: Callable[[str, str], None]) -> bool:
    """Call ``on_ready`` once every worker listens; False if one ended first."""
    lines: list[str] = []
    buffered = b""
    while len(lines) < workers:
        try:
            chunk = os.read(read_ready, 4096)
        except InterruptedError:
            continue
        if not chunk:  # every worker's end of the pipe closed: one ended before listening
            return False
        buffered += chunk
        *complete, buffered = buffered.split(b"\n")
        lines += [line.decode() for line in complete]
    url, _, event_store = lines[0].partition("\t")
    on_ready(url, event_store)
    return True


def _wait_for(
    children: list[int],
    announced: bool,
    stopping: Callable[[], bool],
    stop: Callable[[int, object], None],
) -> int:
    """Wait for the workers (by pid: the projector is another child, reaped elsewhere)."""
    # One ended before they all listened: a start-up that failed, 3 as with one worker (it
    # was 1, a worker that died while serving).
    code = 0 if announced or stopping() else 3
    running = set(children)
    while running:
        for pid in list(running):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                running.discard(pid)
                continue
            if done == 0:
                continue
            running.discard(pid)
            if not _ended_cleanly(os.waitstatus_to_exitcode(status), stopping()):
                if not stopping():
                    log.error("an API worker (pid %d) ended: stopping the others", pid)
                    stop(signal.SIGTERM, None)
                code = code or 1
        time.sleep(0.1)
    return code


def _ended_cleanly(exit_code: int, stopping: bool) -> bool:
    """Whether a worker's end is the stop asked for: 0, or one stopped while it was still
    starting (uvicorn's start-up cut short exits 3; before its handlers, SIGTERM's own)."""
    if not stopping:
        return False
    return exit_code in (0, 3, -signal.SIGTERM)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended already
        os.kill(pid, signum)


def workers_from(option: int | None) -> int:
    """``--workers``, else ``WEB_CONCURRENCY`` (the name uvicorn and gunicorn read), else 1."""
    if option is not None:
        return option
    return web_concurrency(os.environ)


_OWNED_METRICS_DIR = "LEDGER_OWNS_PROMETHEUS_MULTIPROC_DIR"


def share_metrics_between(workers: int) -> None:
    """Give several workers one folder for prometheus-client's counters.

    prometheus-client picks its storage when it is imported, which the command line
    has done already: without ``PROMETHEUS_MULTIPROC_DIR``, ``serve`` sets it to a
    new folder and starts itself again (exec), then removes the folder at exit.
    """
    if os.environ.get(_OWNED_METRICS_DIR):
        _remove_at_exit(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        return
    if workers <= 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    import tempfile

    folder = tempfile.mkdtemp(prefix="ledger-metrics-")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": folder, _OWNED_METRICS_DIR: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "api.cli", *sys.argv[1:]], env)  # noqa: S606


def _remove_at_exit(folder: str) -> None:
    import atexit
    import shutil

    parent = os.getpid()

    def remove() -> None:
        if os.getpid() == parent:
            shutil.rmtree(folder, ignore_errors=True)

    atexit.register(remove)
