"""Soak: mixed traffic against ``ledger serve`` for a bounded time, memory sampled, then audited.

Traffic on loopback, from a few concurrent clients, each picking at random:
purchases (``POST /v1/credits/purchase``, then paid through the Stripe stand-in's
``/pay``, which delivers the signed webhook to the ledger), spends (with
idempotency keys, some repeated), holds (placed, then captured in part or
released), reads (credits, transactions, purchases) and monthly resets (the
period moves on every few seconds). The API process's RSS
(and its projector's) is sampled every few seconds.

Afterwards: the stand-in's deliveries have all been answered 2xx, the views catch
up with the store, and ``ledger audit verify`` must find nothing. Prints requests
served, errors and the memory curve; exits 1 on any error or finding.

    python -m bench.soak [--seconds 180] [--clients 16] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import psutil

from bench.postgres import bench_database, postgres_server
from bench.service import (
    WEBHOOK_SECRET,
    Server,
    ledger_command,
    ledger_service,
    open_accounts,
    progress,
    service_env,
    stripe_standin,
)

ACCOUNTS = 40
SAMPLE_SECONDS = 5.0
PERIOD_SECONDS = 15.0  # the "month" the resets name moves on this often
MB = 1024 * 1024
# Answers that are part of the traffic, not errors: a short balance, a reset for a period
# another client already moved past.
EXPECTED = {("spend", 402), ("hold", 402), ("reset", 409)}


@dataclass
class Tally:
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    paid_sessions: int = 0

    def record(self, kind: str, response: httpx.Response | None, error: str = "") -> bool:
        if response is None:
            self.errors.append(f"{kind}: {error}")
            return False
        self.answers[(kind, response.status_code)] += 1
        if response.status_code < 300 or (kind, response.status_code) in EXPECTED:
            return True
        self.errors.append(f"{kind}: {response.status_code} {response.text[:200]}")
        return False

    @property
    def served(self) -> int:
        return sum(self.answers.values())


@dataclass(frozen=True)
class Customer:
    account_id: str
    headers: dict[str, str]


class Traffic:
    def __init__(self, url: str, writer: str, customers: list[Customer], seed: int) -> None:
        self.url = url
        self.writer = {"Authorization": f"Bearer {writer}"}
        self.customers = customers
        self.tally = Tally()
        self.random = random.Random(seed)
        self.started = time.monotonic()
        self.spent_keys: list[tuple[str, str, int]] = []

    def period(self) -> str:
        months = int((time.monotonic() - self.started) // PERIOD_SECONDS)
        return f"{2040 + months // 12}-{months % 12 + 1:02d}"

    async def call(
        self, client: httpx.AsyncClient, kind: str, method: str, url: str, **kw: object
    ) -> httpx.Response | None:
        try:
            response = await client.request(method, url, **kw)  # type: ignore[arg-type]
        except httpx.HTTPError as error:
            self.tally.record(kind, None, repr(error))
            return None
        return response if self.tally.record(kind, response) else None

    async def purchase(self, client: httpx.AsyncClient, customer: Customer) -> None:
        key = f"soak-{self.random.getrandbits(64):x}"
        started = await self.call(
            client,
            "purchase",
            "POST",
            "/v1/credits/purchase",
            json={"credits": self.random.choice([100, 250, 1000])},
            headers={**customer.headers, "Idempotency-Key": key},
        )
        if started is None:
            return
        paid = await self.call(
            client, "pay (stand-in)", "POST", started.json()["checkout_url"] + "/pay"
        )
        if paid is not None:
            self.tally.paid_sessions += 1

    async def spend(self, client: httpx.AsyncClient, customer: Customer) -> None:
        if self.spent_keys and self.random.random() < 0.1:  # a client retrying with its key
            account_id, key, amount = self.random.choice(self.spent_keys)
        else:
            account_id, key = customer.account_id, f"job-{self.random.getrandbits(64):x}"
            amount = self.random.choice([1, 5, 20, 100])
            self.spent_keys.append((account_id, key, amount))
            del self.spent_keys[:-1000]
        await self.call(
            client,
            "spend",
            "POST",
            f"/v1/accounts/{account_id}/spend",
            json={"amount": amount, "reason": "soak"},
            headers={**self.writer, "Idempotency-Key": key},
        )

    async def hold(self, client: httpx.AsyncClient, customer: Customer) -> None:
        """Reserve, then capture part of it or release it (the work ran, or did not)."""
        amount = self.random.choice([5, 20, 100])
        placed = await self.call(
            client,
            "hold",
            "POST",
            f"/v1/accounts/{customer.account_id}/holds",
            json={"amount": amount, "expires_in_seconds": 60, "reason": "soak"},
            headers={**self.writer, "Idempotency-Key": f"hold-{self.random.getrandbits(64):x}"},
        )
        if placed is None or placed.status_code != 201:
            return
        hold = f"/v1/accounts/{customer.account_id}/holds/{placed.json()['hold_id']}"
        if self.random.random() < 0.7:
            captured = self.random.randint(0, amount)
            await self.call(
                client,
                "capture",
                "POST",
                f"{hold}/capture",
                json={"amount": captured},
                headers=self.writer,
            )
        else:
            await self.call(client, "release", "POST", f"{hold}/release", headers=self.writer)

    async def read(self, client: httpx.AsyncClient, customer: Customer) -> None:
        path = self.random.choice(
            ["/v1/credits", "/v1/credits/transactions", "/v1/credits/purchases"]
        )
        await self.call(client, "read", "GET", path, headers=customer.headers)

    async def reset(self, client: httpx.AsyncClient, customer: Customer) -> None:
        await self.call(
            client,
            "reset",
            "POST",
            f"/v1/accounts/{customer.account_id}/monthly-reset",
            json={"period": self.period()},
            headers=self.writer,
        )

    async def client(self, deadline: float) -> None:
        actions = [
            self.purchase,
            self.spend,
            self.spend,
            self.spend,
            self.hold,
            self.read,
            self.read,
            self.read,
            self.reset,
        ]
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            while time.monotonic() < deadline:
                await self.random.choice(actions)(client, self.random.choice(self.customers))


async def sample_memory(
    server: Server, deadline: float, samples: list[tuple[float, int, int]]
) -> None:
    """(seconds since start, API RSS, API + projector RSS) every SAMPLE_SECONDS."""
    started = time.monotonic()
    api = psutil.Process(server.pid)
    while True:
        total = await asyncio.to_thread(server.rss_bytes)
        samples.append((time.monotonic() - started, api.memory_info().rss, total))
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(min(SAMPLE_SECONDS, max(deadline - time.monotonic(), 0)))


async def wait_for_views(database_url: str, seconds: float = 120) -> tuple[int, dict[str, int]]:
    connection = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + seconds
        while True:
            head = await connection.fetchval(
                "SELECT coalesce(max(notification_id), 0) FROM stored_events"
            )
            rows = await connection.fetch("SELECT name, position FROM projection_positions")
            positions = {row["name"]: int(row["position"]) for row in rows}
            if positions and min(positions.values()) >= head:
                return head, positions
            if time.monotonic() > deadline:
                return head, positions
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


async def wait_for_deliveries(standin_url: str, seconds: float = 60) -> Counter[str]:
    """Every webhook the stand-in sent has been answered 2xx (it retries failures)."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=standin_url, timeout=30) as client:
        while True:
            attempts = (await client.get("/_standin/deliveries")).json()["data"]
            events = (await client.get("/_standin/events")).json()["data"]
            delivered = {a["event_id"] for a in attempts if 200 <= (a["status"] or 0) < 300}
            outcome = Counter(f"HTTP {a['status']}" for a in attempts)
            if len(delivered) >= len(events) or time.monotonic() > deadline:
                outcome["events"] = len(events)
                outcome["events delivered 2xx"] = len(delivered)
                return outcome
            await asyncio.sleep(0.5)


def memory_table(samples: list[tuple[float, int, int]]) -> str:
    api = [rss for _, rss, _ in samples]
    total = [rss for _, _, rss in samples]
    lines = [
        "| RSS (MiB) | start | min | max | end |",
        "|---|---:|---:|---:|---:|",
        f"| API process | {api[0] / MB:.1f} | {min(api) / MB:.1f} | {max(api) / MB:.1f} | {api[-1] / MB:.1f} |",
        f"| API + projector | {total[0] / MB:.1f} | {min(total) / MB:.1f} | {max(total) / MB:.1f} | {total[-1] / MB:.1f} |",
        "",
        "curve (s: API MiB): " + ", ".join(f"{t:.0f}: {rss / MB:.1f}" for t, rss, _ in samples),
    ]
    return "\n".join(lines)


async def soak(database_url: str, seconds: float, clients: int, seed: int) -> int:
    with tempfile.TemporaryDirectory(prefix="ledger-soak-") as folder:
        data_dir, logs = Path(folder) / "data", Path(folder)
        data_dir.mkdir()
        async with (
            stripe_standin(logs) as standin,
            ledger_service(database_url, standin.url, data_dir, logs) as server,
        ):
            async with httpx.AsyncClient(timeout=10) as http:
                await http.post(
                    f"{standin.url}/_standin/webhook-endpoint",
                    json={"url": f"{server.url}/v1/stripe/webhook", "secret": WEBHOOK_SECRET},
                )
            writer, customers = await tokens(database_url, data_dir, server.url)
            traffic = Traffic(server.url, writer, customers, seed)
            progress(
                f"soak: {clients} clients for {seconds:.0f} s against {server.url} (seed {seed})"
            )
            deadline = time.monotonic() + seconds
            samples: list[tuple[float, int, int]] = []
            await asyncio.gather(
                sample_memory(server, deadline, samples),
                *(traffic.client(deadline) for _ in range(clients)),
            )
            deliveries = await wait_for_deliveries(standin.url)
            head, positions = await wait_for_views(database_url)
        verified = await asyncio.to_thread(
            subprocess.run,
            [*ledger_command(), "audit", "verify"],
            env=service_env(database_url, data_dir),
            capture_output=True,
            text=True,
            check=False,
        )
    tally = traffic.tally
    print(f"\n## Soak: {seconds:.0f} s, {clients} clients, seed {seed}\n")
    print(
        f"requests served: {tally.served:,} ({tally.served / seconds:,.0f}/s); errors: {len(tally.errors)}"
    )
    for (kind, status), count in sorted(tally.answers.items()):
        print(f"  {kind:<15} {status}: {count:,}")
    print(
        f"sessions paid through the stand-in: {tally.paid_sessions:,}; webhook deliveries: {dict(deliveries)}"
    )
    print(f"events: {head:,}; views at {positions}\n")
    print(memory_table(samples))
    print(
        "\nledger audit verify:",
        verified.stdout.strip().splitlines()[-1] if verified.stdout.strip() else "",
    )
    failed = (
        bool(tally.errors) or verified.returncode != 0 or min(positions.values(), default=0) < head
    )
    if deliveries["events delivered 2xx"] < deliveries["events"]:
        print("some webhook deliveries were never answered 2xx")
        failed = True
    for error in tally.errors[:20]:
        print("error:", error)
    if verified.returncode != 0:
        print(verified.stdout[-3000:], verified.stderr[-3000:])
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


async def tokens(database_url: str, data_dir: Path, url: str) -> tuple[str, list[Customer]]:
    """A ledger:write token and ACCOUNTS accounts, each with a credits token."""
    from api.access.tokens import Scope, TokenService

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        service = TokenService(pool)
        writer = (await service.issue(Scope.LEDGER_WRITE, name="soak")).secret
        account_ids = [f"acct_soak_{n:03d}" for n in range(ACCOUNTS)]
        await open_accounts(url, writer, account_ids, allowance=5000)
        customers = [
            Customer(
                a,
                {
                    "Authorization": f"Bearer {(await service.issue(Scope.CREDITS, account_id=a)).secret}"
                },
            )
            for a in account_ids
        ]
    finally:
        await pool.close()
    return writer, customers


async def main_async(args: argparse.Namespace) -> int:
    with postgres_server(args.database_url, "--database-url/DATABASE_URL") as (server_url, origin):
        progress(f"PostgreSQL: {origin}")
        async with bench_database(server_url) as database_url:
            return await soak(database_url, args.seconds, args.clients, args.seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="how long the traffic runs")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--seed", type=int, default=None, help="seed of the traffic mix")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.randrange(2**32)
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
