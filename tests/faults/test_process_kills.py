"""SIGKILL under load: of the API (restarted; retries get their first answers) and of the projector."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import signal
import time

import httpx
import psutil
import pytest

from stripe_standin import RunningStandin
from tests.conftest import IsolatedDatabase, migrated_database
from tests.faults.conftest import (
    Answer,
    LedgerProcess,
    Load,
    assert_audit_verify_passes,
    open_accounts,
    projection_positions,
    recorded,
    serving,
    wait_for_answers,
    wait_for_log,
    wait_for_projections,
    writer_token,
)
from tests.integration.test_projections import assert_views_match_the_events
from tests.support.waiting import until

API_KILLS = 3
PROJECTOR_KILLS = 8


class RetryingClients:
    """Clients that send each request until it is answered, with the same key each time.

    ``first[key]`` is the first 2xx answer a key got; ``repeats`` the 2xx answers it got
    again (every third key is sent once more after its answer, as a client unsure of it).
    """

    def __init__(self, load: Load) -> None:
        self.load = load
        self.first: dict[str, Answer] = {}
        self.repeats: list[Answer] = []
        self.unanswered_attempts = 0

    async def until_answered(
        self, client: httpx.AsyncClient, kind: str, account_id: str, key: str, amount: int
    ) -> Answer:
        send = self.load.send_spend if kind == "spend" else self.load.send_webhook
        while True:
            answer = await send(client, account_id, key, amount)
            self.load.answers.append(answer)
            if answer.status is not None and answer.status < 300:
                return answer
            assert answer.status in (None, 503), (answer.status, answer.body)
            self.unanswered_attempts += 1
            await asyncio.sleep(0.05)

    async def run(self, number: int) -> None:
        async with httpx.AsyncClient(base_url=self.load.base_url, timeout=30) as client:
            n = 0
            while not self.load.stop.is_set():
                n += 1
                account_id = self.load.account_ids[(number + n) % len(self.load.account_ids)]
                token = f"{number}-{n}-{secrets.token_hex(4)}"
                kind = "webhook" if n % 4 == 0 else "spend"
                key = f"cs_test_{token}" if kind == "webhook" else f"job-{token}"
                amount = 100 + n % 7 if kind == "webhook" else 1 + n % 5
                self.first[key] = await self.until_answered(client, kind, account_id, key, amount)
                if n % 3 == 0:
                    self.repeats.append(
                        await self.until_answered(client, kind, account_id, key, amount)
                    )


@pytest.mark.slow
async def test_an_api_killed_under_load_and_restarted_keeps_every_answer(
    postgres_server_url: str, faults_standin: RunningStandin, process_folder
) -> None:
    async with migrated_database(postgres_server_url) as database:
        api = LedgerProcess(
            database.url,
            process_folder,
            stripe_api_base=faults_standin.base_url,
            args=("serve", "--no-projector"),
        )
        projector = LedgerProcess(database.url, process_folder, args=("project",))
        try:
            await api.start()
            await projector.start()
            headers = await writer_token(database.pool)
            account_ids = await open_accounts(api.base_url, headers, 16, allowance=1_000_000)
            load = Load(api.base_url, headers, account_ids)
            clients = RetryingClients(load)
            tasks = [asyncio.create_task(clients.run(n)) for n in range(12)]
            try:
                for _ in range(API_KILLS):
                    await wait_for_answers(load, 150, after=time.monotonic())
                    api.send(signal.SIGKILL)
                    assert await api.wait(30) == -signal.SIGKILL
                    await api.start()
            finally:
                load.stop.set()
                await asyncio.gather(*tasks)

            # A retry with the same key, now, gets the first answer, byte for byte the same body.
            async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
                for key, first in clients.first.items():
                    again = await clients.until_answered(
                        client, first.kind, first.account_id, key, first.amount
                    )
                    assert json.loads(again.body) == json.loads(first.body), key
            for repeat in clients.repeats:
                assert json.loads(repeat.body) == json.loads(clients.first[repeat.key].body)

            # Every request answered 2xx has its event, exactly once.
            spent, purchased = await recorded(database.store)
            assert len(spent) == len(set(spent))
            assert len(purchased) == len(set(purchased))
            assert set(spent) == {k for k, a in clients.first.items() if a.kind == "spend"}
            assert set(purchased) == {k for k, a in clients.first.items() if a.kind == "webhook"}

            await wait_for_projections(database.store)
            await assert_views_match_the_events(database.store, account_ids)
            await assert_audit_verify_passes(database.url)
            print(
                f"\nAPI SIGKILL x{API_KILLS}: {len(clients.first)} requests answered "
                f"({clients.unanswered_attempts} attempts cut off and retried), "
                f"{len(clients.first) + len(clients.repeats)} answers compared; events lost: 0"
            )
        finally:
            api.kill_group()
            projector.kill_group()


async def wait_until_past(database: IsolatedDatabase, position: int, seconds: float = 30) -> None:
    async def past() -> bool:
        return min((await projection_positions(database.pool)).values()) > position

    await until(past, seconds, what=f"the views passing {position}")


@pytest.mark.slow
async def test_a_projector_killed_at_random_points_under_load_leaves_views_equal_to_the_replay(
    postgres_server_url: str, faults_standin: RunningStandin, process_folder
) -> None:
    """Extends tests/integration/test_projections.py's kill test: many kills, with writes going on."""
    seed = random.randrange(2**32)
    print(f"\nprojector kill points: seed {seed}")
    chosen = random.Random(seed)
    async with migrated_database(postgres_server_url) as database:
        api = LedgerProcess(
            database.url,
            process_folder,
            stripe_api_base=faults_standin.base_url,
            args=("serve", "--no-projector"),
        )
        projector = LedgerProcess(
            database.url, process_folder, args=("project", "--batch-size", "7")
        )
        try:
            await api.start()
            headers = await writer_token(database.pool)
            account_ids = await open_accounts(api.base_url, headers, 12, allowance=1_000_000)
            load = Load(api.base_url, headers, account_ids)
            tasks = [asyncio.create_task(load.client_loop(n, pause=0.03)) for n in range(4)]
            positions = []
            try:
                for _ in range(PROJECTOR_KILLS):
                    before = min((await projection_positions(database.pool)).values())
                    await projector.start()
                    # Once it is applying batches (of 7 events), kill it anywhere in the next 0.3 s.
                    await wait_until_past(database, before)
                    await asyncio.sleep(chosen.uniform(0, 0.3))
                    projector.send(signal.SIGKILL)
                    assert await projector.wait(30) == -signal.SIGKILL
                    positions.append(min((await projection_positions(database.pool)).values()))
            finally:
                load.stop.set()
                await asyncio.gather(*tasks)

            await projector.start()
            head = await wait_for_projections(database.store)
            await wait_for_log(projector, "projector started")  # stopped at work, not starting
            projector.send(signal.SIGTERM)
            assert await projector.wait(30) == 0

            assert {a.status for a in load.answers} == {200}
            assert len(set(positions)) == PROJECTOR_KILLS  # each one was killed while at work
            await assert_views_match_the_events(database.store, account_ids)
            await assert_audit_verify_passes(database.url)
            print(
                f"projector SIGKILL x{PROJECTOR_KILLS} under {len(load.answers)} requests: "
                f"views at {positions} when killed, all {head} events applied once"
            )
        finally:
            api.kill_group()
            projector.kill_group()


@pytest.mark.slow
async def test_ledger_serve_starts_its_projector_again_when_it_dies(
    postgres_server_url: str, faults_standin: RunningStandin, process_folder
) -> None:
    async with serving(postgres_server_url, process_folder, faults_standin) as (database, api):
        headers = await writer_token(database.pool)
        account_ids = await open_accounts(api.base_url, headers, 2, allowance=1000)
        await wait_for_projections(database.store)
        serve = psutil.Process(api.pid)
        (first,) = serve.children()

        first.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not [c for c in serve.children() if c.pid != first.pid]:
            assert time.monotonic() < deadline, "the projector was not started again"
            await asyncio.sleep(0.1)
        load = Load(api.base_url, headers, account_ids)
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
            for n in range(5):
                answer = await load.send_spend(client, account_ids[n % 2], f"after-{n}", 1)
                assert answer.status == 200
        await wait_for_projections(database.store)
        await assert_views_match_the_events(database.store, account_ids)

        api.send(signal.SIGTERM)
        assert await api.wait(30) == 0
        assert "the projector exited with -9; starting it again" in api.log_text()


def _gone(processes: list[psutil.Process]) -> bool:
    return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)


@pytest.mark.slow
async def test_ledger_serve_killed_at_once_leaves_no_projector_running(
    postgres_server_url: str, faults_standin: RunningStandin, process_folder
) -> None:
    """SIGKILL (the OOM killer's) reaches `ledger serve` alone: its projector, which it
    stops on SIGTERM, stops by itself then. It ran on for good, with its connections and
    the webhook dispatcher, and every restart of `ledger serve` added another."""
    async with serving(postgres_server_url, process_folder, faults_standin) as (_, api):
        serve = psutil.Process(api.pid)
        await until(lambda: serve.children(), what="the projector started")
        children = serve.children()

        api.send(signal.SIGKILL)
        assert await api.wait(30) == -signal.SIGKILL
        await until(lambda: _gone(children), 30, what="the projector stopped with its parent")


@pytest.mark.slow
async def test_ledger_serve_with_workers_killed_at_once_can_be_started_again(
    postgres_server_url: str, faults_standin: RunningStandin, process_folder
) -> None:
    """SIGKILL of `ledger serve --workers 2` left both workers accepting on the API's port
    and the projector running: `ledger serve` started again refused to start ("in use by
    another program"). Each child stops by itself once its parent is gone."""
    async with migrated_database(postgres_server_url) as database:
        api = LedgerProcess(
            database.url,
            process_folder,
            stripe_api_base=faults_standin.base_url,
            args=("serve", "--workers", "2"),
        )
        try:
            await api.start()
            serve = psutil.Process(api.pid)
            await until(lambda: len(serve.children()) == 3, what="two workers and the projector")
            children = serve.children()

            api.send(signal.SIGKILL)
            assert await api.wait(30) == -signal.SIGKILL
            await until(lambda: _gone(children), 60, what="the children stopped with their parent")

            await api.start()  # the same port
            async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as client:
                assert (await client.get("/healthz")).status_code == 200
            # Both workers up (a stop before one of them listens exits 1).
            await wait_for_log(api, "projector started")
            api.send(signal.SIGTERM)
            assert await api.wait(60) == 0, api.log_text()
        finally:
            api.kill_group()
