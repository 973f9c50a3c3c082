"""``ledger serve --workers N``: several API processes on one port, one database."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from api.access.tokens import Scope, TokenService
from api.database import as_role, describe
from ledger.domain.ids import account_stream_id
from stripe_standin import RunningStandin
from tests.conftest import IsolatedDatabase
from tests.e2e.test_metrics import scrape
from tests.e2e.test_startup_and_logs import Serving, serve_env
from tests.support.cli import ROOT
from tests.support.ledger import open_account
from tests.support.processes import children_of
from tests.support.servers import bind_free_port


async def test_two_workers_share_the_port_and_the_books(
    isolated_db: IsolatedDatabase, standin: RunningStandin, tmp_path: Path
) -> None:
    books = isolated_db.ledger()
    await open_account(books, "acct_workers", 1000)
    await books.uow.committer.stop()
    token = (await TokenService(isolated_db.pool).issue(Scope.LEDGER_WRITE, name="t")).secret
    env = serve_env(
        tmp_path,
        # A password (which the test server's trust authentication ignores): never shown.
        DATABASE_URL=with_password(isolated_db.url, "pw-never-shown"),
        STRIPE_SECRET_KEY="sk_test_workers",
        STRIPE_API_BASE=standin.base_url,
        WEB_CONCURRENCY="2",
    )
    before = int(time.time())
    served = Serving(env)
    try:
        ready = await asyncio.to_thread(served.wait_for, "ledger API ready on")
        await asyncio.to_thread(served.wait_for, "projector started")
        children = list(children_of(served.process.pid).values())
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{served.port}", headers=headers, timeout=30
        ) as http:
            # Many connections at once: both workers take some, on one account.
            answers = await asyncio.gather(
                *(
                    http.post(
                        "/v1/accounts/acct_workers/spend",
                        json={"amount": 10, "reason": "job"},
                        headers={"Idempotency-Key": uuid.uuid4().hex},
                    )
                    for _ in range(40)
                )
            )
            samples = await scrape(http)
        code = await asyncio.to_thread(served.stop, signal.SIGTERM)
    finally:
        served.kill()

    # The event store as the workers connect to it, as one process says it: the service's
    # role (it named DATABASE_URL's superuser, whom the set-up alone takes).
    assert json.loads(served.lines[ready])["message"] == (
        f"ledger API ready on http://127.0.0.1:{served.port} (2 workers, event store "
        f"{describe(as_role(isolated_db.url, 'ledger_service'))})"
    )
    assert not any("pw-never-shown" in line for line in served.lines)
    workers = [c for c in children if c.endswith("api.cli serve")]
    projector = [c for c in children if "api.cli project" in c]
    assert (len(workers), len(projector)) == (2, 1), children
    assert [a.status_code for a in answers] == [200] * 40
    # Every spend decided on what the others left (the last answer of them says 600).
    assert min(a.json()["allowance_remaining"] for a in answers) == 600
    # One page for both workers: their counts added up, the start time a worker's (a forked
    # worker's values begin at 0, which was the page's start time).
    assert samples['ledger_http_requests_total{method="POST",status="200"}'] == 40
    assert before <= samples["ledger_process_start_time_seconds"] <= time.time()
    assert code == 0, "\n".join(served.lines)
    messages = [json.loads(line)["message"] for line in served.lines if line]
    # The development demo account: opened, and told about, once (by the first worker).
    assert sum(m == "opened the demo account acct_demo" for m in messages) == 1, messages
    assert sum(m.startswith("try it: curl") for m in messages) == 1, messages
    stored = await isolated_db.pool.fetchval(
        "SELECT count(*) FROM stored_events WHERE originator_id = $1",
        account_stream_id("acct_workers"),
    )
    assert stored == 41  # opened, and 40 spends: none lost, none twice


async def test_a_worker_given_sigint_ends_as_a_stopped_process_not_a_traceback(
    isolated_db: IsolatedDatabase, standin: RunningStandin, tmp_path: Path
) -> None:
    """A worker inherits `serve`'s own handlers: a SIGINT reaching it (a Ctrl-C, which the
    terminal sends every process of the group, or `kill -INT`) ended it as `serve` ends a
    Ctrl-C before it is ready, "an API worker failed" with the KeyboardInterrupt's
    traceback. It stops as a stopped process (the parent stops the others, as for any
    worker that ends by itself)."""
    env = serve_env(
        tmp_path,
        DATABASE_URL=isolated_db.url,
        STRIPE_SECRET_KEY="sk_test_workers",
        STRIPE_API_BASE=standin.base_url,
        WEB_CONCURRENCY="2",
    )
    served = Serving(env)
    try:
        await asyncio.to_thread(served.wait_for, "ledger API ready on")
        [worker, *_] = [
            pid for pid, line in children_of(served.process.pid).items() if line.endswith("serve")
        ]
        os.kill(worker, signal.SIGINT)
        await asyncio.to_thread(served.wait_for, "stopping the others")
        await asyncio.to_thread(served.process.wait, 60)
    finally:
        served.kill()

    assert not any("Traceback" in line or "worker failed" in line for line in served.lines), (
        "\n".join(served.lines)
    )


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:{password}@{host}"))


def test_several_workers_are_refused_where_each_would_start_its_own_stripe(
    tmp_path: Path,
) -> None:
    env = serve_env(tmp_path)
    refused = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--workers", "2"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "Error: several workers need a Stripe they share: run the stand-in on its own "
        "(ledger dev standin --webhook-url URL/v1/stripe/webhook) and set "
        "STRIPE_API_BASE, or set the Stripe keys"
    )


def test_a_stop_while_the_workers_start_is_a_clean_stop(tmp_path: Path) -> None:
    """SIGTERM (a supervisor's stop, a deploy) reaching `serve --workers` before every
    worker listened made it exit 1, a failure to the supervisor: the workers cut short
    in their start-up exit 3, and the parent counted any worker not announced as failed."""
    marker = tmp_path / "starting"
    server = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "tests.support.slow_start_workers", str(marker)], cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob("starting.*"))) < 2:
            assert time.monotonic() < deadline, "the workers did not start"
            assert server.poll() is None
            time.sleep(0.05)
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
    finally:
        server.kill()
        server.wait()


def test_ctrl_c_while_the_workers_start_is_aborted_as_one_processs_is(tmp_path: Path) -> None:
    """A Ctrl-C (SIGINT to the process group) before every worker listened ended
    `serve --workers 2` "stopped" and exit 0, where one process's start-up cut short says
    "Aborted!" and ends by SIGINT (130 in a shell), as every command's Ctrl-C."""
    silent = bind_free_port()  # a database that takes connections and never answers
    silent.listen()
    env = serve_env(
        tmp_path,
        DATABASE_URL=f"postgresql://nobody@127.0.0.1:{silent.getsockname()[1]}/nothing",
        STRIPE_SECRET_KEY="sk_test_workers",
        STRIPE_WEBHOOK_SECRET="whsec_workers_test",
        STRIPE_API_BASE="http://127.0.0.1:9",
        WEB_CONCURRENCY="2",
    )
    served = Serving(env)
    try:
        served.wait_for("starting 2 API workers")  # forked, stuck in their start-up
        code = served.stop(signal.SIGINT)
    finally:
        served.kill()
        silent.close()

    assert code == -signal.SIGINT, served.lines
    assert served.lines[-1] == "Aborted!", served.lines
    assert not any("ledger API ready" in line for line in served.lines)
    assert not any("Traceback" in line for line in served.lines), "\n".join(served.lines)


def test_workers_that_cannot_reach_the_database_exit_3_as_one_worker_does(
    tmp_path: Path,
) -> None:
    """One worker's failed start-up exits 3 (`ledger --help`); several exited 1, as for a
    worker that died while serving: a supervisor told the two apart for one worker only."""
    env = serve_env(
        tmp_path,
        STRIPE_SECRET_KEY="sk_test_workers",
        STRIPE_WEBHOOK_SECRET="whsec_workers_test",
        STRIPE_API_BASE="http://127.0.0.1:9",  # never asked: the database comes first
    )
    served = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--workers", "2", "--no-projector"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert served.returncode == 3, served.stderr
    lines = [json.loads(line) for line in served.stderr.splitlines()]
    errors = {line["message"] for line in lines if line["level"] == "error"}
    assert any(m.startswith("cannot start: cannot connect to postgresql://") for m in errors)
    assert lines[-1]["message"] == "stopped"


def test_ctrl_c_as_a_worker_makes_its_event_loop_is_aborted_without_warnings(
    tmp_path: Path,
) -> None:
    """The stop a Ctrl-C sends each worker (the parent's SIGTERM) reaching it after uvicorn
    had made its coroutine and before that began to run (the event loop being made) ended
    the worker there: under "Aborted!", Python warned "coroutine 'Server.serve' was never
    awaited", once per worker."""
    marker = tmp_path / "making"
    server = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "tests.support.slow_loop_workers", str(marker)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert server.stderr is not None
    try:
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob("making.*"))) < 2:
            assert time.monotonic() < deadline, "the workers did not make their loops"
            assert server.poll() is None
            time.sleep(0.05)
        os.killpg(server.pid, signal.SIGINT)  # Ctrl-C
        lines = [server.stderr.readline()]
        while lines[-1] and "stopping…" not in lines[-1]:
            lines.append(server.stderr.readline())
        (tmp_path / "making.go").touch()  # the loops are made
        code = server.wait(60)
        lines += server.stderr.read().splitlines()
    finally:
        server.kill()
        server.wait()
        server.stderr.close()

    said = "\n".join(line.rstrip("\n") for line in lines)
    assert code == 130, said
    assert said.endswith("Aborted!"), said
    assert "never awaited" not in said
    assert "Traceback" not in said


async def test_one_ctrl_c_lets_every_workers_requests_in_flight_finish(
    isolated_db: IsolatedDatabase, standin: RunningStandin, tmp_path: Path
) -> None:
    """A Ctrl-C reaches each worker twice: the terminal's SIGINT, and the SIGTERM the parent
    sends it for that SIGINT. uvicorn takes a SIGINT that comes once it is stopping for a
    second Ctrl-C: a worker that had the SIGTERM first (or while it handled the SIGINT) cut
    its requests in flight off, answered 503. Here every worker has the SIGTERM first."""
    books = isolated_db.ledger()
    await open_account(books, "acct_inflight", 1000)
    await books.uow.committer.stop()
    token = (await TokenService(isolated_db.pool).issue(Scope.LEDGER_WRITE, name="t")).secret
    env = serve_env(
        tmp_path,
        DATABASE_URL=isolated_db.url,
        STRIPE_SECRET_KEY="sk_test_workers",
        STRIPE_API_BASE=standin.base_url,
        WEB_CONCURRENCY="2",
    )
    served = Serving(env)
    spends: list[socket.socket] = []
    try:
        await asyncio.to_thread(served.wait_for, "ledger API ready on")
        # Started: until it runs its own command, its command line is the parent's.
        await asyncio.to_thread(served.wait_for, "projector started")
        workers = [
            pid for pid, line in children_of(served.process.pid).items() if line.endswith("serve")
        ]
        assert len(workers) == 2
        for _ in range(6):  # in flight: each worker waits for its body
            spends.append(await asyncio.to_thread(begin_spend, served.port, token))
        for worker in workers:
            os.kill(worker, signal.SIGTERM)  # the parent's, come first
        await asyncio.to_thread(lines_with, served, "(SIGTERM): finishing the requests", 2)
        os.killpg(served.process.pid, signal.SIGINT)  # the terminal's (and so the parent's)
        await asyncio.to_thread(lines_with, served, "(SIGINT", 3)  # the parent's, each worker's
        answers = [await asyncio.to_thread(finish_spend, spend) for spend in spends]
        code = await asyncio.to_thread(served.process.wait, 60)
    finally:
        served.kill()
        for spend in spends:
            spend.close()

    said = "\n".join(served.lines)
    assert answers == ["HTTP/1.1 200 OK"] * 6, said
    assert code == 0, said
    assert not any("cut off" in line for line in served.lines), said
    stored = await isolated_db.pool.fetchval(
        "SELECT count(*) FROM stored_events WHERE originator_id = $1",
        account_stream_id("acct_inflight"),
    )
    assert stored == 7  # opened, and 6 spends


_SPEND_BODY = b'{"amount": 1, "reason": "in flight"}'


def begin_spend(port: int, token: str) -> socket.socket:
    """A spend whose head the server has read and whose body it waits for (its
    ``100 Continue`` came)."""
    spend = socket.create_connection(("127.0.0.1", port), timeout=30)
    spend.sendall(
        f"POST /v1/accounts/acct_inflight/spend HTTP/1.1\r\nHost: ledger\r\n"
        f"Authorization: Bearer {token}\r\nIdempotency-Key: {uuid.uuid4().hex}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(_SPEND_BODY)}\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    assert spend.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n")
    return spend


def finish_spend(spend: socket.socket) -> str:
    """Its body sent; the status line of the answer (or "closed")."""
    try:
        spend.sendall(_SPEND_BODY)
        answer = spend.recv(4096)
    except OSError as error:
        return f"closed: {error}"
    return answer.split(b"\r\n", 1)[0].decode() if answer else "closed"


def lines_with(served: Serving, text: str, count: int, seconds: float = 60) -> None:
    """Wait until ``count`` lines contain ``text``."""
    deadline = time.monotonic() + seconds
    while sum(text in line for line in served.lines) < count:
        assert time.monotonic() < deadline, f"not {count} lines with {text!r}:\n" + "\n".join(
            served.lines
        )
        time.sleep(0.05)
