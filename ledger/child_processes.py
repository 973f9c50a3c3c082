"""Worker processes that leave Ctrl-C to the process that started them.

Ctrl-C on a terminal sends SIGINT to the whole foreground process group, workers
included. A spawned worker still importing printed a ``KeyboardInterrupt`` traceback,
and one at work ended on its own, in the middle of whatever its parent was doing
(`ledger audit verify`, `ledger projections rebuild`). Started with SIGINT blocked, a
worker keeps it blocked (the signal mask is inherited across ``fork`` and ``exec``, and
Python leaves it alone): the parent alone is interrupted, and stops its workers itself.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import select
import signal
import sys
import threading
import time
import types
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

_CTRL_C = {signal.SIGINT}


@contextmanager
def started_deaf_to_ctrl_c() -> Iterator[None]:
    """Processes this thread starts in the block never receive SIGINT.

    In this thread SIGINT is blocked meanwhile, not ignored: a Ctrl-C during the block
    is delivered when it ends.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _CTRL_C)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def spawned_without_main() -> Iterator[None]:
    """Processes this thread spawns in the block do not run the program's main module again.

    A spawned child runs the parent's ``__main__`` (as ``__mp_main__``) before its task:
    for ``ledger``, the console script, which imports every command's module (click, the
    settings, the service's wiring) that a replay's worker never uses, 0.07-0.1 s of its
    start. The task's own module is imported when the child unpickles it, and with it what
    the task needs. Only for children whose task, initializer and arguments live in modules
    (none in ``__main__``); ``multiprocessing`` reads ``__main__`` as each process starts.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")  # no __file__, no __spec__
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def stop_pool_now(executor: ProcessPoolExecutor) -> None:
    """End a pool's workers at once (SIGTERM), their work with them, without waiting."""
    # Python 3.14's executor.terminate_workers(); before it, the pool's own processes.
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()


def end_with_parent() -> None:
    """End this worker process at once when the process that started it ends.

    A parent ended without stopping its workers (``kill PID``, which reaches it alone,
    or the OOM killer's SIGKILL) left a ``ProcessPoolExecutor``'s workers waiting for
    good: they hold both ends of the pool's queues, so none of them ever reads an end of
    file. Run in the worker (a pool's ``initializer``).
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch(sentinel: int) -> None:
        multiprocessing.connection.wait([sentinel])
        os._exit(1)

    threading.Thread(
        target=watch, args=(parent.sentinel,), name="end-with-parent", daemon=True
    ).start()


SUPERVISOR_PID = "LEDGER_SUPERVISOR_PID"
"""The environment variable that names the process a supervised child ends with
(``api/supervision.py`` sets it, ``stop_when_parent_ends`` reads it)."""


def stop_when_parent_ends(parent: int) -> None:
    """SIGTERM this process (its own graceful stop) when ``parent``, the process that
    started it, ends.

    ``ledger serve``'s projector and its ``--workers`` are started by a process that stops
    them on SIGTERM or Ctrl-C. One ended at once (SIGKILL, the OOM killer) left them
    running for good: the projector (and its webhook dispatcher) with its connections, a
    worker still accepting on the API's port, so that ``ledger serve`` started again
    could not bind it ("in use by another program").
    """
    if os.getppid() != parent:  # gone already (the child is someone else's now)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    try:
        watched: int | None = os.pidfd_open(parent)
    except (AttributeError, OSError):  # not Linux 5.3+: look now and then
        watched = None
    if watched is not None and os.getppid() != parent:  # it ended before the pidfd
        os.close(watched)
        os.kill(os.getpid(), signal.SIGTERM)
        return

    def watch() -> None:
        if watched is not None:
            ended = select.poll()
            ended.register(watched, select.POLLIN)  # readable once the process has ended
            ended.poll()
        else:
            while os.getppid() == parent:
                time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-when-parent-ends", daemon=True).start()
