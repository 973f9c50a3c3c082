"""The ledger API served over real HTTP, talking to the Stripe stand-in with the real SDK."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import httpx
import msgspec
import pytest
from ledger_client import LedgerClient
from litestar import Litestar

from api.access.tokens import Scope
from api.app import create_app
from api.services import Services
from api.settings import Settings
from stripe_standin import RunningStandin, run_standin
from tests.conftest import unique
from tests.support.ledger import open_account
from tests.support.servers import bind_free_port, serving
from tests.support.stripe_events import PREVIOUS_WEBHOOK_SECRET, WEBHOOK_SECRET


@pytest.fixture(scope="session")
async def standin() -> AsyncIterator[RunningStandin]:
    async with run_standin() as running:
        yield running


def suite_settings(
    database_url: str, standin: RunningStandin, port: int, data_dir: str
) -> Settings:
    """The settings the suite's APIs run with: the stand-in as Stripe, loopback receivers."""
    return Settings(
        database_url=database_url,
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        stripe_secret_key="sk_test_ledger_suite",
        stripe_api_base=standin.base_url,
        stripe_webhook_secret=f"{WEBHOOK_SECRET},{PREVIOUS_WEBHOOK_SECRET}",
        data_dir=Path(data_dir),
        # The suite's webhook receivers listen on 127.0.0.1.
        webhook_allow_private=True,
    )


@asynccontextmanager
async def served_api(
    database_url: str,
    standin: RunningStandin,
    *,
    changes: Mapping[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[Litestar]:
    """``create_app(..., **options)`` with the suite's settings (and ``changes`` to them),
    served on a free port (its address in ``app.state.base_url``)."""
    sock = bind_free_port()
    port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="ledger-test-data-") as data_dir:
        settings = suite_settings(database_url, standin, port, data_dir)
        app = create_app(msgspec.structs.replace(settings, **(changes or {})), **options)
        async with serving(app, sock) as base_url:
            app.state.base_url = base_url
            yield app


@pytest.fixture(scope="session")
async def ledger_app(database_url: str, standin: RunningStandin) -> AsyncIterator[Litestar]:
    """The API as users run it, on a free port, with the stand-in as its Stripe."""
    async with served_api(database_url, standin) as app:
        standin.configure_webhooks(f"{app.state.base_url}/v1/stripe/webhook", WEBHOOK_SECRET)
        yield app


@pytest.fixture(scope="session")
async def replica_app(database_url: str, standin: RunningStandin) -> AsyncIterator[Litestar]:
    """A second API on the suite's database, as another replica behind a load balancer
    (Stripe's webhooks still go to the first)."""
    async with served_api(database_url, standin) as app:
        yield app


@pytest.fixture
async def replica(replica_app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=replica_app.state.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def services(ledger_app: Litestar) -> Services:
    return ledger_app.state.services  # type: ignore[no-any-return]


@pytest.fixture
async def http(ledger_app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ledger_app.state.base_url, timeout=30) as client:
        yield client


class Connect(Protocol):
    def __call__(self, token: str, **options: Any) -> LedgerClient: ...


@pytest.fixture
async def connect(ledger_app: Litestar) -> AsyncIterator[Connect]:
    """Python clients of the served API (clients/python), one per token, closed afterwards.

    ``retries=0`` unless a test asks: these tests prove the service's own answers, and a
    retried 503 would hide one (the client's retries have tests of their own).
    """
    opened: list[LedgerClient] = []

    def connect(token: str, **options: Any) -> LedgerClient:
        client = LedgerClient(ledger_app.state.base_url, token, **{"retries": 0, **options})
        opened.append(client)
        return client

    yield connect
    for client in opened:
        await client.aclose()


@pytest.fixture
async def writer(connect: Connect, services: Services) -> LedgerClient:
    """The client as an internal service holds it: a ``ledger:write`` token."""
    issued = await services.tokens.issue(Scope.LEDGER_WRITE, name="tests")
    return connect(issued.secret)


class Customer:
    """An open account and a credits token bound to it."""

    def __init__(self, account_id: str, token: str) -> None:
        self.account_id = account_id
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def customer(services: Services) -> Customer:
    account_id = unique("acct")
    await open_account(services.ledger, account_id, 1000)
    issued = await services.tokens.issue(Scope.CREDITS, account_id=account_id)
    return Customer(account_id, issued.secret)


@pytest.fixture
async def writer_headers(services: Services) -> dict[str, str]:
    issued = await services.tokens.issue(Scope.LEDGER_WRITE, name="tests")
    return {"Authorization": f"Bearer {issued.secret}"}


@pytest.fixture
async def auditor_headers(services: Services) -> dict[str, str]:
    issued = await services.tokens.issue(Scope.LEDGER_AUDIT, name="auditor")
    return {"Authorization": f"Bearer {issued.secret}"}
