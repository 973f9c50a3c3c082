"""The deployment's topology, for tests that break parts of it.

One topology for the whole package (each test leaves it whole again): a
PostgreSQL primary and its streaming standby, three API replicas
(``ledger serve --no-projector``, reading views from the standby), one projector
and nginx with ``deploy/nginx.conf``: the processes ``make cluster`` runs
(cluster/topology.py), started one by one so that a test can kill one.

Where ``ip netns`` works (root), each of them is a host of its own on a private
network the tests make and remove (cluster/netns.py): the primary, the standby,
each replica, nginx, and the projector's host. Elsewhere they share loopback
ports, and the tests say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from api.access.tokens import Scope, TokenService
from api.database import create_pool
from cluster import netns, nginx
from cluster.postgres import PostgresError, PostgresServer, create_database, find_binaries
from cluster.run import resolve
from cluster.topology import Plan, ledger_processes, setup_process
from ledger.store.event_store import EventStore
from tests.faults.conftest import free_port
from tests.support.events import events_since
from tests.support.stripe_events import WEBHOOK_SECRET

ROOT = Path(__file__).resolve().parents[2]
API_PORT = 8000  # every replica's, on its own host (loopback: free ports instead)
REPLICAS = 3


@dataclass
class Part:
    """One process of the topology, started and stopped by the tests."""

    name: str
    argv: list[str]
    env: dict[str, str]
    folder: Path
    health_url: str | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.folder / f"{self.name}.log"

    async def start(self, *, seconds: float = 60) -> None:
        """Start it; with a health URL, wait until it answers 200."""
        self.starts += 1
        with self.log.open("ab") as output:
            output.write(f"\n=== start {self.starts}: {' '.join(self.argv)}\n".encode())
            output.flush()
            self.process = subprocess.Popen(  # noqa: ASYNC220, S603
                self.argv,
                env=self.env,
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if self.health_url is None:
            return
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"{self.name} exited at start-up:\n{self.log_tail()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(self.health_url)).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} did not answer in {seconds} s:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait(self, seconds: float = 30) -> int:
        assert self.process is not None
        return await asyncio.to_thread(self.process.wait, seconds)

    async def stop(self, seconds: float = 30) -> None:
        if not self.running:
            return
        self.send(signal.SIGTERM)
        try:
            await self.wait(seconds)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            await self.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Topology:
    """The running topology and what the tests need to reach it."""

    mode: str
    """How it is laid out, in a sentence for the reports."""
    folder: Path
    network: netns.Network | None
    primary: PostgresServer
    standby: PostgresServer
    apis: list[Part]
    projector: Part
    proxy: Part
    base_url: str
    pool: asyncpg.Pool | None = None
    headers: dict[str, str] = field(default_factory=dict)
    audit_headers: dict[str, str] = field(default_factory=dict)

    @property
    def store(self) -> EventStore:
        assert self.pool is not None
        return EventStore(self.pool)

    @property
    def parts(self) -> list[Part]:
        return [*self.apis, self.projector, self.proxy]

    async def make_whole(self) -> None:
        """Start whatever a test left stopped, and wait for the standby to answer."""
        if self.network is not None:
            for host in self.network.hosts.values():
                self.network.restore(host)
        for server in (self.primary, self.standby):
            if server.process is None or server.process.poll() is not None:
                await asyncio.to_thread(server.start)
        await asyncio.gather(*(part.start() for part in self.parts if not part.running))


async def _build(folder: Path, network: netns.Network | None) -> Topology:
    binaries = find_binaries()

    def host(name: str) -> netns.Host | None:
        return network.add_host(name) if network is not None else None

    def where(chosen: netns.Host | None) -> tuple[str, list[str]]:
        return (chosen.address, chosen.exec_prefix()) if chosen else ("127.0.0.1", [])

    primary_host, standby_host = host("primary"), host("standby")
    api_hosts = [host(f"api{n}") for n in range(1, REPLICAS + 1)]
    proxy_host, workers_host = host("proxy"), host("workers")

    address, prefix = where(primary_host)
    primary = PostgresServer(
        "primary",
        binaries,
        folder / "pg-primary",
        address,
        5432 if primary_host else free_port(),
        exec_prefix=prefix,
    )
    await asyncio.to_thread(primary.initdb, [network.cidr] if network else [])
    await asyncio.to_thread(primary.start)
    await asyncio.to_thread(create_database, primary)
    address, prefix = where(standby_host)
    standby = PostgresServer(
        "standby",
        binaries,
        folder / "pg-standby",
        address,
        5432 if standby_host else free_port(),
        exec_prefix=prefix,
    )
    await asyncio.to_thread(standby.make_standby_of, primary)
    await asyncio.to_thread(standby.start)

    api_addresses = [(where(h)[0], API_PORT if h else free_port()) for h in api_hosts]
    proxy_address, proxy_prefix = where(proxy_host)
    proxy_port = API_PORT if proxy_host else free_port()
    base_url = f"http://{proxy_address}:{proxy_port}"
    plan = Plan(
        api_addresses=api_addresses,
        admin_url=primary.url(),
        database_url=primary.url(user="ledger_service"),
        projector_database_url=primary.url(user="ledger_projector"),
        read_url=standby.url(user="ledger_service"),
        public_url=base_url,
        data_dir=folder / "data",
        webhook_secret=WEBHOOK_SECRET,
        page_key=secrets.token_hex(32),
        # Each replica on a host of its own takes 9100; on loopback each its own port.
        metrics_ports=[9100 if h else free_port() for h in api_hosts],
        api_hosts=[h.name if h else None for h in api_hosts],
        workers_host=workers_host.name if workers_host else None,
    )
    migrate = setup_process(plan)
    done = await asyncio.to_thread(
        subprocess.run,
        resolve(migrate.argv),
        env={**os.environ, **migrate.env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Stripe is not called: the tests send webhooks themselves, signed with WEBHOOK_SECRET.
    environ = {"STRIPE_SECRET_KEY": "sk_test_cluster", "STRIPE_API_BASE": "http://127.0.0.1:9"}
    hosts = {h.name: h for h in (*api_hosts, workers_host) if h is not None}
    parts: dict[str, Part] = {}
    for process in ledger_processes(plan, environ):
        prefix = hosts[process.host].exec_prefix() if process.host else []
        parts[process.name] = Part(
            process.name,
            [*prefix, *resolve(process.argv)],
            {**os.environ, **process.env},
            folder,
            (
                f"http://{process.env['HOST']}:{process.env['PORT']}/healthz"
                if process.service == "api"
                else None
            ),
        )
    command = nginx.prepare(
        [f"{h}:{p}" for h, p in api_addresses], f"{proxy_address}:{proxy_port}", folder / "nginx"
    )
    proxy = Part(
        "proxy", [*proxy_prefix, *command], dict(os.environ), folder, f"{base_url}/healthz"
    )
    mode = (
        f"network namespaces on {network.cidr}: primary, standby, {REPLICAS} replicas, nginx "
        "and the projector each on a host of its own"
        if network
        else f"loopback ports (no network namespaces: {network_problem()})"
    )
    return Topology(
        mode=mode,
        folder=folder,
        network=network,
        primary=primary,
        standby=standby,
        apis=[parts[f"api{n}"] for n in range(1, REPLICAS + 1)],
        projector=parts["projector"],
        proxy=proxy,
        base_url=base_url,
    )


def network_problem() -> str | None:
    """Why the topology runs on loopback ports (None: it gets network namespaces)."""
    if os.environ.get("LEDGER_TEST_NETNS", "").lower() in ("0", "off", "no"):
        return "LEDGER_TEST_NETNS=off"
    return netns.available()


@pytest.fixture(scope="package")
async def topology() -> AsyncIterator[Topology]:
    """The running topology (see the module); skipped where nginx is missing."""
    if nginx.find_nginx() is None:
        pytest.skip("no nginx: `make nginx` installs Debian's package (the cluster tests need it)")
    try:
        find_binaries()
    except PostgresError as error:
        pytest.skip(f"no PostgreSQL programs for a primary and a standby: {error}")
    with tempfile.TemporaryDirectory(prefix="ledger-cluster-") as name:
        folder = Path(name)
        os.chmod(name, 0o755)  # noqa: S103  (the servers' user reaches its data folders through it)
        network = netns.Network() if network_problem() is None else None
        built: Topology | None = None
        try:
            built = await _build(folder, network)
            print(f"\ncluster topology: {built.mode}")
            # The migrate step has set the database up: everything starts at once.
            await asyncio.gather(*(part.start() for part in built.parts))
            built.pool = await create_pool(built.primary.url(), min_size=1, max_size=5)
            issued = await TokenService(built.pool).issue(Scope.LEDGER_WRITE, name="cluster")
            audit = await TokenService(built.pool).issue(Scope.LEDGER_AUDIT, name="cluster")
            built.headers = {"Authorization": f"Bearer {issued.secret}"}
            built.audit_headers = {"Authorization": f"Bearer {audit.secret}"}
            yield built
        finally:
            if built is not None:
                if built.pool is not None:
                    await built.pool.close()
                for part in built.parts:
                    with contextlib.suppress(Exception):
                        await part.stop(10)
                for server in (built.standby, built.primary):
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(server.stop, mode="immediate", seconds=20)
            if network is not None:
                network.close()


@pytest.fixture
async def cluster(topology: Topology) -> Topology:
    """The topology, whole: every part running (a test before may have stopped one)."""
    await topology.make_whole()
    return topology


async def open_accounts(cluster: Topology, count: int, allowance: int = 1_000_000) -> list[str]:
    account_ids = [f"acct_cluster_{secrets.token_hex(5)}" for _ in range(count)]
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as client:
        for account_id in account_ids:
            opened = await client.post(
                "/v1/accounts",
                json={"account_id": account_id, "monthly_allowance": allowance},
                headers=cluster.headers,
            )
            assert opened.status_code == 201, opened.text
    return account_ids


@dataclass
class SpendLoad:
    """Clients that spend through nginx, each request retried with its key until answered 2xx.

    Steady and bounded: ``clients`` at a time, a pause between requests, until
    ``stop`` or ``max_requests`` each. Reads (``read_every``) ask for the balance with the
    position of the client's last spend.
    """

    cluster: Topology
    account_ids: list[str]
    clients: int = 6
    pause: float = 0.01
    max_requests: int = 2_000
    read_every: int = 0
    statuses: Counter[int | None] = field(default_factory=Counter)
    read_statuses: Counter[int | None] = field(default_factory=Counter)
    read_from: Counter[str] = field(default_factory=Counter)
    acknowledged: dict[str, int] = field(default_factory=dict)
    """Key -> amount, for every spend answered 2xx."""
    retried: set[str] = field(default_factory=set)
    """Keys sent more than once (an attempt cut off, refused or answered 5xx)."""
    retry_after_missing: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    events: list[tuple[float, int | None]] = field(default_factory=list)
    """(time sent, status) of every spend attempt."""

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + sum(self.read_statuses.values())

    async def run(self) -> None:
        await asyncio.gather(*(self._client(n) for n in range(self.clients)))

    async def _client(self, number: int) -> None:
        async with httpx.AsyncClient(base_url=self.cluster.base_url, timeout=30) as client:
            for n in range(self.max_requests):
                if self.stop.is_set():
                    return
                account_id = self.account_ids[(number + n) % len(self.account_ids)]
                key = f"cluster-{number}-{n}-{secrets.token_hex(4)}"
                position = await self._spend(client, account_id, key, 1 + n % 3)
                if self.read_every and n % self.read_every == 0:
                    await self._read(client, account_id, position)
                await asyncio.sleep(self.pause)

    async def _spend(
        self, client: httpx.AsyncClient, account_id: str, key: str, amount: int
    ) -> int:
        attempts = 0
        while True:
            attempts += 1
            sent = time.monotonic()
            try:
                response = await client.post(
                    f"/v1/accounts/{account_id}/spend",
                    json={"amount": amount, "reason": key},
                    headers={**self.cluster.headers, "Idempotency-Key": key},
                )
            except httpx.TransportError:
                status = None
            else:
                status = response.status_code
                if status == 503 and not response.headers.get("retry-after"):
                    self.retry_after_missing += 1
            self.statuses[status] += 1
            self.events.append((sent, status))
            if status is not None and status < 300:
                assert response.headers.get("ledger-position", "").isdigit(), response.headers
                self.acknowledged[key] = amount
                if attempts > 1:
                    self.retried.add(key)
                return int(response.headers["ledger-position"])
            assert status in (None, 502, 503, 504), (status, response.text)
            await asyncio.sleep(0.05)

    async def _read(self, client: httpx.AsyncClient, account_id: str, position: int) -> None:
        try:
            response = await client.get(
                f"/v1/accounts/{account_id}/credits",
                headers={**self.cluster.headers, "Ledger-Min-Position": str(position)},
            )
        except httpx.TransportError:
            self.read_statuses[None] += 1
            return
        self.read_statuses[response.status_code] += 1
        self.read_from[response.headers.get("ledger-read-from", "?")] += 1

    def answered_since(self, moment: float) -> int:
        return sum(1 for sent, status in self.events if sent >= moment and status is not None)


async def wait_for_answers(
    load: SpendLoad, count: int, *, after: float, seconds: float = 60
) -> None:
    deadline = time.monotonic() + seconds
    while load.answered_since(after) < count:
        assert time.monotonic() < deadline, f"fewer than {count} answers in {seconds} s"
        await asyncio.sleep(0.02)


async def spends_stored(cluster: Topology, keys: set[str]) -> Counter[str]:
    """How many CreditsSpent events each of ``keys`` has in the primary's store."""
    found: Counter[str] = Counter()
    for kind, data in await events_since(cluster.store, 0):
        if kind == "CreditsSpent" and data["reason"] in keys:
            found[data["reason"]] += 1
    return found


async def assert_nothing_lost(cluster: Topology, load: SpendLoad, name: str) -> None:
    """Every acknowledged spend stored exactly once (retried ones too); print the report."""
    stored = await spends_stored(cluster, set(load.acknowledged))
    lost = [key for key in load.acknowledged if stored[key] == 0]
    twice = [key for key, count in stored.items() if count > 1]
    print(
        f"\n{name} [{'network namespaces' if cluster.network else 'loopback'}]: "
        f"{load.sent} requests sent, answers "
        f"{dict(sorted(load.statuses.items(), key=str))} (spends)"
        + (
            f", {dict(load.read_statuses)} (reads, from {dict(load.read_from)})"
            if load.read_statuses
            else ""
        )
        + f"; {len(load.acknowledged)} spends acknowledged, {len(load.retried)} of them retried; "
        f"events stored {sum(stored.values())}, events lost {len(lost)}"
    )
    assert lost == []
    assert twice == []
    assert sum(stored.values()) == len(load.acknowledged)
