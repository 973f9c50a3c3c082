"""SIGTERM: requests in flight finish, the projector commits and exits 0, the pool closes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal

import psutil
import pytest

from api.startup import STOP_GRACE_SECONDS
from stripe_standin import RunningStandin
from tests.faults.conftest import (
    Load,
    OwnPostgres,
    assert_audit_verify_passes,
    open_accounts,
    projection_positions,
    recorded,
    serving,
    wait_for_answers,
    wait_for_log,
    writer_token,
)

IN_FLIGHT = 40


def spend_request(
    port: int, headers: dict[str, str], account_id: str, key: str, *more_headers: str
) -> tuple[bytes, bytes]:
    """A spend of 1 credit, its reason its key, as raw HTTP/1.1: its head and its body."""
    body = json.dumps({"amount": 1, "reason": key}).encode()
    head = (
        f"POST /v1/accounts/{account_id}/spend HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Authorization: {headers['Authorization']}\r\n"
        f"Idempotency-Key: {key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        + "".join(f"{header}\r\n" for header in more_headers)
        + "\r\n"
    )
    return head.encode(), body


class HalfSentSpend:
    """A spend whose body is held back until the server has started handling it.

    ``Expect: 100-continue`` makes the server say when the handler first reads the
    body: from then on the request is in flight, whatever happens to the server.
    """

    def __init__(self, port: int, headers: dict[str, str], account_id: str, key: str) -> None:
        self.port = port
        self.head, self.body = spend_request(
            port, headers, account_id, key, "Expect: 100-continue", "Connection: close"
        )
        self.key = key

    async def start(self) -> None:
        """Send the head; return once the server asked for the body (it is handling it)."""
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(self.head)
        await self.writer.drain()
        interim = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 30)
        assert interim.startswith(b"HTTP/1.1 100"), interim

    async def finish(self) -> tuple[int, dict[str, object]]:
        """Send the body; read the whole answer (to the server closing the connection)."""
        self.writer.write(self.body)
        await self.writer.drain()
        answer = await asyncio.wait_for(self.reader.read(), 30)
        self.writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return status, json.loads(body)


@pytest.mark.slow
async def test_sigterm_lets_requests_in_flight_finish_and_the_projector_commit(
    own_postgres: OwnPostgres, faults_standin: RunningStandin, process_folder
) -> None:
    async with serving(own_postgres.url, process_folder, faults_standin) as (database, api):
        headers = await writer_token(database.pool)
        account_ids = await open_accounts(api.base_url, headers, 8, allowance=1_000_000)
        projector = next(
            child for child in psutil.Process(api.pid).children() if "project" in child.cmdline()
        )

        # At work, not starting: stopped while it starts up (imports, connecting), it
        # exits at once and leaves the views to its next start.
        await wait_for_log(api, "projector started")
        # A burst of ordinary traffic, so the projector has work when the signal comes.
        load = Load(api.base_url, headers, account_ids)
        clients = [asyncio.create_task(load.client_loop(n)) for n in range(8)]
        await wait_for_answers(load, 200, after=0)
        held = [
            HalfSentSpend(api.port, headers, account_ids[n % 8], f"inflight-{n}")
            for n in range(IN_FLIGHT)
        ]
        await asyncio.gather(*(request.start() for request in held))

        api.send(signal.SIGTERM)
        answers = await asyncio.gather(*(request.finish() for request in held))
        load.stop.set()
        await asyncio.gather(*clients)
        exit_code = await api.wait(60)

        # Every request the server had started got its whole answer, and its event.
        assert [status for status, _ in answers] == [200] * IN_FLIGHT, answers
        assert all(body["amount"] == 1 for _, body in answers)
        spent, purchased = await recorded(database.store)
        assert {request.key for request in held} <= set(spent)
        assert {a.key for a in load.ok("spend")} <= set(spent)
        assert {a.key for a in load.ok("webhook")} <= set(purchased)
        # The background clients' requests either completed or were refused before
        # the server took them (it stopped accepting): never a broken answer.
        assert all(a.status in (200, None) for a in load.answers)
        assert {a.key for a in load.failed("spend")}.isdisjoint(spent)

        # `ledger serve` exits 0 only when its projector did; the projector stopped
        # with every event applied and committed, and nothing was left running.
        log = api.log_text()
        assert exit_code == 0, log[-3000:]
        # Said after the app's shutdown ran (the pool closed) and the projector exited.
        assert log.rstrip().splitlines()[-1].endswith('"message":"stopped"}'), log[-3000:]
        assert not projector.is_running()
        head = await database.store.head_position()
        assert set((await projection_positions(database.pool)).values()) == {head}
        await assert_audit_verify_passes(database.url)
        print(
            f"\nSIGTERM: {IN_FLIGHT} requests in flight all answered 200, "
            f"{len(load.answers)} background requests, views at {head} of {head}"
        )


class KeptConnection:
    """One keep-alive connection to the server, sending requests on it one at a time."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.headers = headers

    async def __aenter__(self) -> KeptConnection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def spend(self, account_id: str, key: str) -> tuple[bytes, dict[str, object]] | None:
        """The answer's head and body, or None if the server closed the connection first."""
        self.writer.write(b"".join(spend_request(self.port, self.headers, account_id, key)))
        try:
            await self.writer.drain()
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 30)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = re.search(rb"\r\ncontent-length: (\d+)\r\n", head, re.IGNORECASE)
        assert length is not None, head
        return head.lower(), json.loads(await self.reader.readexactly(int(length[1])))

    async def closed_by_server(self) -> bool:
        """Whether the server ends the connection (within 30 s) without sending anything."""
        return await asyncio.wait_for(self.reader.read(), 30) == b""


async def stopped_listening(port: int) -> None:
    """Until a connection to ``port`` is refused: uvicorn closes its listening socket and
    asks every open connection to shut down in one step, so that has happened too."""
    for _ in range(600):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return
        writer.close()
        await asyncio.sleep(0.05)
    raise AssertionError(f"port {port} still accepted connections after 30 s")


@pytest.mark.slow
async def test_sigterm_answers_a_request_on_an_idle_keep_alive_connection_and_closes_it(
    own_postgres: OwnPostgres, faults_standin: RunningStandin, process_folder
) -> None:
    """uvicorn closed idle keep-alive connections the moment it was told to stop. A proxy
    that had just sent a request on one (nginx, in a rolling restart) got no answer, and
    nginx answers such a POST 502 rather than send it to another replica (CI: 1 spend of
    569). After a SIGTERM an idle connection stays until its peer closes it or its
    keep-alive time ends; a request on it is answered, with `Connection: close`."""
    async with serving(own_postgres.url, process_folder, faults_standin) as (database, api):
        headers = await writer_token(database.pool)
        (account_id,) = await open_accounts(api.base_url, headers, 1, allowance=100)
        await wait_for_log(api, "projector started")  # an ordinary stop, not one at start-up
        async with (
            KeptConnection(api.port, headers) as used,
            KeptConnection(api.port, headers) as left_idle,
        ):
            before = await used.spend(account_id, "before-the-stop")
            assert before is not None
            assert b"connection: close" not in before[0], before

            api.send(signal.SIGTERM)
            await stopped_listening(api.port)
            after = await used.spend(account_id, "on-a-kept-connection")

            assert after is not None, "the idle connection was closed with the request on it"
            head, body = after
            assert head.startswith(b"http/1.1 200 "), after
            assert b"\r\nconnection: close\r\n" in head, head
            assert body["amount"] == 1, body
            assert await used.closed_by_server()
            assert await left_idle.closed_by_server()  # at its keep-alive time
        assert await api.wait(60) == 0, api.log_text()[-3000:]
        spent, _ = await recorded(database.store)
        assert spent == ["before-the-stop", "on-a-kept-connection"]


@pytest.mark.slow
async def test_ctrl_c_closes_idle_keep_alive_connections_at_once(
    own_postgres: OwnPostgres, faults_standin: RunningStandin, process_folder
) -> None:
    """At a terminal a browser's idle connections would hold a Ctrl-C's stop up for their
    keep-alive time: SIGINT closes them as uvicorn does, and a request sent on one after
    is not answered (nor recorded)."""
    async with serving(own_postgres.url, process_folder, faults_standin) as (database, api):
        headers = await writer_token(database.pool)
        (account_id,) = await open_accounts(api.base_url, headers, 1, allowance=100)
        await wait_for_log(api, "projector started")  # an ordinary stop, not one at start-up
        async with KeptConnection(api.port, headers) as connection:
            assert await connection.spend(account_id, "before-the-stop") is not None

            os.killpg(api.pid, signal.SIGINT)  # a Ctrl-C reaches the whole process group
            await stopped_listening(api.port)

            assert await connection.spend(account_id, "after-the-stop") is None
        assert await api.wait(60) == 0, api.log_text()[-3000:]
        spent, _ = await recorded(database.store)
        assert spent == ["before-the-stop"]


@pytest.mark.slow
async def test_a_spend_whose_body_never_comes_holds_a_sigterm_up_for_the_grace_time_only(
    own_postgres: OwnPostgres, faults_standin: RunningStandin, process_folder
) -> None:
    """The stop waited for every request in flight however long it took, so one client
    that sent a spend's head and never its body (or never read an answer) held the stop
    up for good: a supervisor killed the service at its own time, projector and all. A
    request still running ``STOP_GRACE_SECONDS`` after the SIGTERM is cut off: answered
    503 with ``Retry-After`` and nothing recorded, and the service stops as ever."""
    async with serving(own_postgres.url, process_folder, faults_standin) as (database, api):
        headers = await writer_token(database.pool)
        (account_id,) = await open_accounts(api.base_url, headers, 1, allowance=100)
        await wait_for_log(api, "projector started")  # an ordinary stop, not one at start-up
        stalled = HalfSentSpend(api.port, headers, account_id, "body-never-sent")
        await stalled.start()  # the server asked for the body: the request is in flight

        api.send(signal.SIGTERM)
        answer = await asyncio.wait_for(stalled.reader.read(), STOP_GRACE_SECONDS + 30)
        stalled.writer.close()
        exit_code = await api.wait(60)
        spent, _ = await recorded(database.store)

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), answer
    assert b"\r\nretry-after: 1" in head.lower(), head
    assert json.loads(body) == {"message": "The server is stopping; please retry."}
    log = api.log_text()
    # Cut off by the grace's end, not before it; said as a warning of ours, not uvicorn's ERROR.
    assert "stopping now (the 20 s grace ended): 1 request in flight cut off" in log, log[-3000:]
    assert '"level":"error"' not in log, log[-3000:]
    assert exit_code == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert log.rstrip().splitlines()[-1].endswith('"message":"stopped"}'), log[-3000:]
    assert "body-never-sent" not in spent
