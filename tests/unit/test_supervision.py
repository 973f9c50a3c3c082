"""``ledger serve``'s supervised child: how its stop is told from its failure."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from api.supervision import SupervisedProcess

# The child says it is running (and, for the second, that its handler is in place) by
# writing a file; a SIGTERM before its handler is its default action, death.
STARTING = "import sys, time; open(sys.argv[1], 'w').close(); time.sleep(60)"
# It naps rather than sleeping a minute: a SIGTERM that lands after the interpreter last
# looked for one and before the sleep's system call began (the test stops it as soon as
# the file is there) runs its handler only when the sleep ends (seen under load: 30 s).
HANDLING = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(int(sys.argv[2])))\n"
    "open(sys.argv[1], 'w').close()\n"
    "for _ in range(600):\n"
    "    time.sleep(0.1)\n"
)


def started(script: str, folder: Path, *args: str) -> SupervisedProcess:
    ready = folder / "ready"
    child = SupervisedProcess([sys.executable, "-c", script, str(ready), *args], "the child")
    child.start()
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.01)
    return child


def test_a_child_ended_by_the_stops_sigterm_before_it_handles_one_stopped_cleanly(
    tmp_path: Path,
) -> None:
    """Stopped while still starting (before its handler is in place) the projector died of
    the SIGTERM, -15, and `ledger serve` exited 1 for a stop a supervisor asked for."""
    assert started(STARTING, tmp_path).stop() == 0


def test_a_child_that_handles_the_sigterm_is_judged_by_its_exit_code(tmp_path: Path) -> None:
    assert started(HANDLING, tmp_path, "0").stop() == 0
    (tmp_path / "ready").unlink()
    assert started(HANDLING, tmp_path, "1").stop() == 1


def test_a_child_ended_by_a_sigterm_to_the_group_is_not_started_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A supervisor's SIGTERM to the whole process group (systemd's default) reached the
    starting projector before `ledger serve` stopped it: it was started again in 1 s, in
    the middle of the stop, and serve exited 1."""
    child = started(STARTING, tmp_path)
    assert child.pid is not None
    with caplog.at_level(logging.INFO, logger="ledger"):
        os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while not any("the child" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the watcher said nothing"
            time.sleep(0.01)
    assert [r.getMessage() for r in caplog.records] == ["the child stopped"]
    assert child.stop() == 0
    assert child.restarts == 0


def blocked_signals(pid: int) -> int:
    """The process's blocked signals, as the kernel shows them (a bit a signal)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(
        next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk")), 16
    )


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_a_ctrl_c_to_the_group_is_left_to_the_supervisor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C reached the projector still importing: a KeyboardInterrupt traceback, -2,
    and `ledger serve` exited 1 (or started it again in the middle of its stop)."""
    child = started(STARTING, tmp_path)
    assert child.pid is not None

    os.kill(child.pid, signal.SIGINT)  # as a Ctrl-C on the terminal sends it

    assert blocked_signals(child.pid) & 1 << (signal.SIGINT - 1)
    with caplog.at_level(logging.INFO, logger="ledger"):
        assert child.stop() == 0
    assert child.restarts == 0
    assert [r.getMessage() for r in caplog.records] == ["the child stopped"]
