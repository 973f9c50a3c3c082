"""Webhook endpoints are listed a page at a time, in the order they were made (migration 0022
numbers those made before it in the order they were listed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api.database import owner_connection
from ledger.notifications.endpoints import EndpointRegistry
from ledger.store.migrate import available_migrations
from tests.conftest import IsolatedDatabase

URL = "https://hooks.example.com/ledger"


async def test_pages_of_endpoints_follow_on_without_a_gap_or_a_repeat(
    isolated_db: IsolatedDatabase,
) -> None:
    registry = EndpointRegistry(isolated_db.pool, allow_private=True)
    made = [(await registry.create(URL, ["credits.spent"])).id for _ in range(5)]
    await registry.disable(made[1])

    first = await registry.list(limit=2)
    second = await registry.list(after=first[-1].position, limit=2)
    last = await registry.list(after=second[-1].position, limit=2)
    everything = await registry.list(include_disabled=True)

    assert [[e.id for e in p] for p in (first, second, last)] == [
        [made[0], made[2]],
        [made[3], made[4]],
        [],
    ]
    assert [e.id for e in everything] == made
    assert [e.position for e in everything] == sorted({e.position for e in everything})


async def test_endpoints_made_before_the_migration_are_numbered_in_the_order_they_were_made(
    isolated_db: IsolatedDatabase,
) -> None:
    migration = next(sql for version, _, sql in available_migrations() if version == 22)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    made_at = {"we_c": start, "we_a": start + timedelta(hours=1), "we_b": start}
    async with owner_connection(isolated_db.url) as connection:
        await connection.execute("ALTER TABLE webhook_endpoints DROP COLUMN position")
        for endpoint_id, created in made_at.items():
            await connection.execute(
                """INSERT INTO webhook_endpoints (endpoint_id, url, event_types, secret, created_at)
                   VALUES ($1, $2, '{credits.spent}', 'whsec_x', $3)""",
                endpoint_id,
                URL,
                created,
            )
        await connection.execute(migration)
    registry = EndpointRegistry(isolated_db.pool, allow_private=True)
    newest = await registry.create(URL, ["credits.spent"])

    listed = await registry.list()

    assert [(e.id, e.position) for e in listed] == [
        ("we_b", 1),
        ("we_c", 2),
        ("we_a", 3),
        (newest.id, 4),
    ]
