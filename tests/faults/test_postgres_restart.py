"""PostgreSQL stopped and started under a spend and webhook load: 503 meanwhile, nothing lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from stripe_standin import RunningStandin
from tests.faults.conftest import (
    Load,
    OwnPostgres,
    assert_audit_verify_passes,
    describe_answers,
    open_accounts,
    recorded,
    serving,
    wait_for_answers,
    wait_for_projections,
    writer_token,
)

CLIENTS = 12


def unhandled_errors(log: str) -> list[str]:
    """The service's log lines about 500s, with the exception that caused each."""
    lines = log.splitlines()
    return [
        "\n".join(lines[i : i + 60])
        for i, line in enumerate(lines)
        if "unhandled error" in line or "Exception in ASGI" in line
    ][:3]


async def wait_for_success(load: Load, *, after: float, seconds: float = 60) -> float:
    """When the first 2xx sent after ``after`` was answered: the service is back."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        back = [
            a.answered_at
            for a in load.answers
            if a.sent_at >= after and a.status is not None and a.status < 300
        ]
        if back:
            return min(back)
        await asyncio.sleep(0.02)
    raise AssertionError(f"no 2xx within {seconds} s of PostgreSQL's restart")


@pytest.mark.slow
async def test_the_service_answers_503_while_postgres_is_away_and_loses_nothing(
    own_postgres: OwnPostgres, faults_standin: RunningStandin, process_folder
) -> None:
    async with serving(own_postgres.url, process_folder, faults_standin) as (database, api):
        headers = await writer_token(database.pool)
        account_ids = await open_accounts(api.base_url, headers, 16, allowance=1_000_000)
        load = Load(api.base_url, headers, account_ids)
        clients = [asyncio.create_task(load.client_loop(n)) for n in range(CLIENTS)]
        try:
            await wait_for_answers(load, 150, after=0)
            await own_postgres.stop()
            down_from = time.monotonic()
            await wait_for_answers(load, 100, after=down_from)
            down_until = time.monotonic()
            await own_postgres.start()
            await database.pool.expire_connections()  # the test's own pool: cut off too
            back_at = await wait_for_success(load, after=down_until)
            await wait_for_answers(load, 150, after=back_at)
        finally:
            load.stop.set()
            await asyncio.gather(*clients)

        # While it was away, every answer was a 503 with Retry-After; never a 500.
        while_down = [
            a for a in load.answers if down_from <= a.sent_at and a.answered_at <= down_until
        ]
        assert len(while_down) >= 100
        assert {a.status for a in while_down} == {503}, describe_answers(while_down)
        assert all(a.retry_after for a in while_down)
        assert {a.status for a in load.answers} <= {200, 503}, (
            describe_answers(load.answers),
            unhandled_errors(api.log_text()),
        )
        assert all(a.retry_after for a in load.answers if a.status == 503)

        # Every 2xx has its event, exactly once.
        spent, purchased = await recorded(database.store)
        assert len(spent) == len(set(spent))
        assert len(purchased) == len(set(purchased))
        assert {a.key for a in load.ok("spend")} <= set(spent)
        assert {a.key for a in load.ok("webhook")} <= set(purchased)
        # No failed request has one, except those whose commit was under way when the
        # server stopped: their answer was lost with the connection, not their commit.
        failed = load.failed("spend") + load.failed("webhook")
        committed = [a for a in failed if a.key in set(spent) | set(purchased)]
        assert all(a.sent_at < down_from for a in committed), describe_answers(committed)
        assert len(spent) + len(purchased) == len(load.ok("spend")) + len(load.ok("webhook")) + len(
            committed
        )

        # Retried now (a client with its idempotency key, Stripe with its event), each
        # failed request is applied once: the cut-off commits are not applied again.
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
            for answer in failed:
                send = load.send_spend if answer.kind == "spend" else load.send_webhook
                retried = await send(client, answer.account_id, answer.key, answer.amount)
                assert retried.status == 200, retried.body
        spent, purchased = await recorded(database.store)
        assert len(spent) == len(set(spent)) == len(load.ok("spend")) + len(load.failed("spend"))
        assert len(purchased) == len(set(purchased))
        assert len(purchased) == len(load.ok("webhook")) + len(load.failed("webhook"))

        # The projector (a child of `ledger serve`) recovered by itself too.
        try:
            await wait_for_projections(database.store)
        except AssertionError:
            (process_folder.parent / "faults-last-api.log").write_text(api.log_text())
            raise
        await assert_audit_verify_passes(database.url)
        assert api.process is not None
        assert api.process.poll() is None, "the API process did not survive the restart"
        print(
            f"\nPostgreSQL restart: {len(load.answers)} requests "
            f"({describe_answers(load.answers)}), {len(while_down)} answered while it was "
            f"away, {len(failed)} failed requests retried ({len(committed)} of them had committed "
            f"as the server stopped); events lost: 0"
        )


@pytest.mark.slow
async def test_a_postgres_that_takes_connections_but_never_answers_is_503_not_500(
    own_postgres: OwnPostgres, faults_standin: RunningStandin, process_folder
) -> None:
    """A frozen server (its postmaster stopped: the kernel still takes each connection, no
    one answers it) failed the pool's connect with a TimeoutError after CONNECT_TIMEOUT,
    which no handler knew: a 500 with a traceback, where a database away is a 503."""
    async with serving(own_postgres.url, process_folder, faults_standin) as (database, api):
        headers = await writer_token(database.pool)
        (account_id,) = await open_accounts(api.base_url, headers, 1, allowance=100)
        postmaster = int(
            (Path(own_postgres.server.pgdata) / "postmaster.pid").read_text().split()[0]
        )
        os.kill(postmaster, signal.SIGSTOP)
        try:
            # The service's connections cut (their backends run on), so it must connect anew;
            # until none is left: one forked just before the stop may finish starting after
            # (a CI run's spend went through on one, 200).
            for _ in range(50):
                cut = await database.pool.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE usename = $1 AND pid <> pg_backend_pid()",
                    "ledger_service",
                )
                await asyncio.sleep(0.1)
                if not cut:
                    break
            await asyncio.sleep(0.5)
            async with httpx.AsyncClient(base_url=api.base_url, timeout=60) as client:
                answer = await client.post(
                    f"/v1/accounts/{account_id}/spend",
                    json={"amount": 1, "reason": "frozen"},
                    headers={**headers, "Idempotency-Key": "frozen"},
                )
        finally:
            os.kill(postmaster, signal.SIGCONT)
        assert answer.status_code == 503, (answer.text, unhandled_errors(api.log_text()))
        assert answer.headers["Retry-After"] == "1"
        assert answer.json() == {"message": "The ledger's database is unavailable; please retry."}
        assert unhandled_errors(api.log_text()) == []
