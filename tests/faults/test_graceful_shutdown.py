"""SIGTERM: requests in flight finish, the projector commits and exits 0, the pool closes."""

from __future__ import annotations

import asyncio
import json
import signal

import psutil
import pytest

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


class HalfSentSpend:
    """A spend whose body is held back until the server has started handling it.

    ``Expect: 100-continue`` makes the server say when the handler first reads the
    body: from then on the request is in flight, whatever happens to the server.
    """

    def __init__(self, port: int, headers: dict[str, str], account_id: str, key: str) -> None:
        self.port = port
        self.body = json.dumps({"amount": 1, "reason": key}).encode()
        self.head = (
            f"POST /v1/accounts/{account_id}/spend HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n"
            f"Authorization: {headers['Authorization']}\r\n"
            f"Idempotency-Key: {key}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\n"
            "Expect: 100-continue\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
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
            child
            for child in psutil.Process(api.pid).children()
            if "project" in child.cmdline()
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
