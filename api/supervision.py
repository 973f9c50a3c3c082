"""A child process that is started again when it dies (``ledger serve``'s projector)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time

from ledger.child_processes import SUPERVISOR_PID, started_deaf_to_ctrl_c

log = logging.getLogger("ledger")

RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_SECONDS = 60.0
"""A child that ran this long before it died starts again without waiting long."""


class SupervisedProcess:
    """Runs ``command``; while not stopped, starts it again (with backoff) when it fails.

    An exit status of 0 (a signal it handles) or -SIGTERM (one that came before it could)
    means it was asked to stop: it is not started again then.
    """

    def __init__(self, command: list[str], name: str) -> None:
        self.command = command
        self.name = name
        self.restarts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._env: dict[str, str] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start it (with ``env``, or this process's environment); restarts use the same."""
        self._env = env
        with self._lock:
            self._process = self._popen()
        self._watcher = threading.Thread(target=self._watch, name=f"{self.name} watcher")
        self._watcher.daemon = True
        self._watcher.start()

    def _watch(self) -> None:
        failures = 0
        while True:
            process = self._process
            assert process is not None
            ran = _wait_timed(process)
            if self._stopping.is_set():
                return
            if _asked_to_stop(process.returncode):
                # Ctrl-C, or a supervisor's SIGTERM, reaches the whole process group: not a
                # crash, and not to be started again while `ledger serve` itself stops.
                log.info("%s stopped", self.name)
                return
            failures = 0 if ran >= STABLE_SECONDS else failures + 1
            delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS)) - 1] if failures else 0.0
            log.error(
                "%s exited with %s; starting it again in %.0f s",
                self.name,
                process.returncode,
                delay,
            )
            if self._stopping.wait(delay):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._process = self._popen()
                self.restarts += 1

    def _popen(self) -> subprocess.Popen[bytes]:
        # Ctrl-C reaches the whole process group: the child leaves it to this process,
        # which stops it (a child still importing printed a KeyboardInterrupt traceback
        # and died of it).
        # It ends with this process (SUPERVISOR_PID: ledger/child_processes.py), which may
        # be ended at once (SIGKILL) without stopping it.
        env = {**(os.environ if self._env is None else self._env), SUPERVISOR_PID: str(os.getpid())}
        with started_deaf_to_ctrl_c():
            return subprocess.Popen(self.command, env=env)  # noqa: S603

    def stop(self, timeout: float = 30) -> int:
        """Ask it to stop (SIGTERM), wait for it, and return its exit code."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is None:
            return 0
        running = process.poll() is None
        if running:
            process.terminate()
        code = process.wait(timeout=timeout)
        if _asked_to_stop(code):
            if running:  # else its watcher said so
                log.info("%s stopped", self.name)
            return 0
        log.error("%s exited with %s", self.name, code)
        return code


def _asked_to_stop(code: int) -> bool:
    """Whether a child's exit status says it stopped because it was asked to.

    0 is a stop it handled. -SIGTERM is a SIGTERM that came before it could handle one
    (the interpreter starting, its imports), when it had applied nothing: `ledger serve`
    stopped by a supervisor just after it started exited 1 for it.
    """
    return code in (0, -signal.SIGTERM)


def _wait_timed(process: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    process.wait()
    return time.monotonic() - started
