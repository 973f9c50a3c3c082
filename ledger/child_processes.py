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
import signal
import threading
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
