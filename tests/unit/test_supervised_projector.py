"""The projector ``ledger serve`` starts says its last words in the server's log format."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest


def test_a_supervised_projector_that_cannot_start_says_why_in_a_json_log_line() -> None:
    """Its "Error: cannot connect …" came as a bare line among the server's JSON lines."""
    with socket.socket() as deaf:  # bound, never listening: the connection is refused
        deaf.bind(("127.0.0.1", 0))
        url = f"postgresql://nobody@127.0.0.1:{deaf.getsockname()[1]}/ledger"
        failed = subprocess.run(
            [sys.executable, "-m", "api.cli", "project", "--supervised"],
            env={**os.environ, "DATABASE_URL": url, "LEDGER_LOG_FORMAT": "json"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert failed.returncode == 1
    lines = [json.loads(line) for line in failed.stderr.splitlines() if line.strip()]
    [said] = [line for line in lines if line["level"] == "error"]
    assert said["logger"] == "projections.runner"
    assert said["message"].startswith(f"cannot connect to {url} (")
    assert said["message"].endswith("is PostgreSQL running there? (DATABASE_URL)")


def test_a_stop_asked_while_starting_is_remembered_where_its_exit_was_swallowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CI run's `ledger serve` Ctrl-C landed as the projector imported: its SystemExit was
    raised in an import's weakref callback, printed ("Traceback ... SystemExit: 0") and
    swallowed, and the projector started all the same. The stop is remembered for the
    projector's start to look at (api/cli_project.py)."""
    import signal
    import weakref

    from api.cli_project import ExitWhileStarting

    swallowed: list[type[BaseException]] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda raised: swallowed.append(raised.exc_type))
    monkeypatch.setattr(signal, "signal", lambda *_: None)  # this process's SIGTERM kept
    exit_now = ExitWhileStarting()

    class Module:
        pass

    module = Module()
    watched = weakref.ref(module, lambda _: exit_now())
    del module  # the callback runs here, as importlib's did

    assert watched() is None
    assert swallowed == [SystemExit]
    assert exit_now.asked


def test_a_sigterm_while_the_loop_runs_ends_it_from_a_callback_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Raised where the signal landed, in a transport's callback (asyncpg's TLS upgrade while
    connecting), uvloop logged the exit as a fatal error with its traceback, and `ledger
    serve`'s log showed "Traceback" for a Ctrl-C while it started."""
    import asyncio
    import signal

    from api.cli_project import ExitWhileStarting
    from ledger import event_loop

    monkeypatch.setattr(signal, "signal", lambda *_: None)  # this process's SIGTERM kept
    exit_now = ExitWhileStarting()
    went_on: list[str] = []

    async def starting() -> None:
        exit_now()  # as the signal's handler runs, within a callback of the loop
        went_on.append("past the signal")
        await asyncio.sleep(5)
        went_on.append("slept")

    with pytest.raises(SystemExit) as ended:
        event_loop.run(starting())

    assert ended.value.code == 0
    assert went_on == ["past the signal"]
    assert exit_now.asked
