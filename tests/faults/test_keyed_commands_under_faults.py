"""Holds, captures, grants and purchases under a PostgreSQL restart and an API SIGKILL:
every key applied once, every repeat answered byte for byte as first."""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections import Counter
from typing import Any

import httpx
import pytest

from api.access.tokens import Scope, TokenService
from stripe_standin import RunningStandin
from tests.faults.conftest import OwnPostgres, open_accounts, serving, writer_token
from tests.support.events import events_since

Sent = tuple[str, str, Any, dict[str, str]]
"""A keyed request: its path, its key, its body and its headers."""


class KeyedClients:
    """Clients that send each keyed request until it is answered (503s and lost answers
    retried with the same key), keeping every first answer."""

    def __init__(
        self, base_url: str, writer: dict[str, str], customers: dict[str, dict[str, str]]
    ) -> None:
        self.base_url = base_url
        self.writer = writer
        self.customers = customers
        self.first: dict[str, tuple[Sent, int, bytes]] = {}
        self.retried = Counter[str]()
        self.stop = asyncio.Event()

    async def until_answered(
        self, client: httpx.AsyncClient, path: str, key: str, body: Any, headers: dict[str, str]
    ) -> httpx.Response:
        while True:
            try:
                answer = await client.post(
                    path, json=body, headers={**headers, "Idempotency-Key": key}
                )
            except httpx.TransportError:
                self.retried["lost"] += 1
            else:
                if answer.status_code != 503:
                    self.first[key] = (
                        (path, key, body, headers),
                        answer.status_code,
                        answer.content,
                    )
                    return answer
                self.retried["503"] += 1
            await asyncio.sleep(0.05)

    async def run(self, number: int) -> None:
        accounts = list(self.customers)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                account_id = accounts[(number + n) % len(accounts)]
                tag = f"{number}-{n}-{secrets.token_hex(3)}"
                base = f"/v1/accounts/{account_id}"
                held = await self.until_answered(
                    client, f"{base}/holds", f"h-{tag}", {"amount": 3}, self.writer
                )
                assert held.status_code == 201, held.text
                capture = f"{base}/holds/{held.json()['hold_id']}/capture"
                captured = await self.until_answered(
                    client, capture, f"c-{tag}", {"amount": 2}, self.writer
                )
                assert captured.status_code == 200, captured.text
                granted = await self.until_answered(
                    client, f"{base}/grants", f"g-{tag}", {"amount": 1}, self.writer
                )
                assert granted.status_code == 201, granted.text
                if n % 3 == 0:
                    bought = await self.until_answered(
                        client,
                        "/v1/credits/purchase",
                        f"p-{tag}",
                        {"credits": 100},
                        self.customers[account_id],
                    )
                    assert bought.status_code == 200, bought.text


@pytest.mark.slow
async def test_keyed_commands_apply_once_through_a_postgres_restart_and_an_api_sigkill(
    own_postgres: OwnPostgres, faults_standin: RunningStandin, process_folder
) -> None:
    async with serving(own_postgres.url, process_folder, faults_standin) as (database, api):
        writer = await writer_token(database.pool)
        customers = {}
        for account_id in await open_accounts(api.base_url, writer, 6, allowance=1_000_000):
            issued = await TokenService(database.pool).issue(Scope.CREDITS, account_id=account_id)
            customers[account_id] = {"Authorization": f"Bearer {issued.secret}"}
        clients = KeyedClients(api.base_url, writer, customers)
        tasks = [asyncio.create_task(clients.run(n)) for n in range(6)]
        try:
            await asyncio.sleep(2)
            await own_postgres.stop()
            await asyncio.sleep(1)
            await own_postgres.start()
            await database.pool.expire_connections()
            await asyncio.sleep(2)
            api.send(signal.SIGKILL)
            assert await api.wait(30) == -signal.SIGKILL
            await api.start()
            await asyncio.sleep(2)
        finally:
            clients.stop.set()
            await asyncio.gather(*tasks)

        # Every key again, now, on the restarted API: its first answer, byte for byte.
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
            for (path, key, body, headers), status, content in clients.first.values():
                again = await client.post(
                    path, json=body, headers={**headers, "Idempotency-Key": key}
                )
                assert (again.status_code, again.content) == (status, content), path
                assert again.headers["Idempotent-Replayed"] == "true"

        # Each key's command is in the store exactly once.
        events = await events_since(database.store, 0)
        recorded = Counter(kind for kind, _ in events)
        sent = Counter(key.split("-")[0] for key in clients.first)
        assert (
            recorded["HoldPlaced"],
            recorded["HoldCaptured"],
            recorded["CreditsGranted"],
            recorded["CheckoutRequested"],
        ) == (sent["h"], sent["c"], sent["g"], sent["p"])
        assert sum(clients.retried.values()) > 0, "no request met the faults"
        print(
            f"\nkeyed commands under faults: {len(clients.first)} keys, "
            f"{dict(clients.retried)} attempts retried; each applied once"
        )
