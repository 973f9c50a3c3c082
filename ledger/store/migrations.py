"""Versioned, idempotent schema migrations applied at start-up.

Each ``migrations/NNNN_name.sql`` file runs once, in order, inside one
transaction that also records it in ``schema_migrations``. A session-level
advisory lock keeps two processes starting at once from racing.
"""

from __future__ import annotations

import logging
from importlib import resources

from ledger.store.event_store import Connection

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 748200102


def available_migrations() -> list[tuple[int, str, str]]:
    """The packaged migrations as (version, name, sql), oldest first."""
    folder = resources.files("ledger.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def apply_migrations(connection: Connection) -> list[str]:
    """Apply every migration not yet recorded; return the names applied."""
    await connection.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await connection.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            r["version"] for r in await connection.fetch("SELECT version FROM schema_migrations")
        }
        applied = []
        for version, name, sql in available_migrations():
            if version in done:
                continue
            async with connection.transaction():
                await connection.execute(sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            log.info("applied migration %s", name)
            applied.append(name)
        return applied
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
