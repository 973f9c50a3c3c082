"""The API's statements keep one plan on a large store (the service's own sessions, which
leave the choice to PostgreSQL: api/database.SERVICE_SETTINGS).

PostgreSQL plans a prepared statement for its parameters five times, then keeps the
generic plan unless those custom plans looked cheaper: as the tables grow, a value near
the end of a column's histogram makes every custom plan look cheaper, so the statement is
planned again on every call, which cost more than running it.
"""

from __future__ import annotations

import uuid

import asyncpg
from eventsourcing.persistence import StoredEvent

from api.database import create_pool
from ledger.store.event_store import EventStore
from tests.conftest import IsolatedDatabase

CALLS = 20
FIRST_CUSTOM_PLANS = 5
"""What PostgreSQL tries before it may settle on the generic plan."""


def happened(stream: uuid.UUID, version: int) -> StoredEvent:
    return StoredEvent(
        originator_id=stream, originator_version=version, topic="tests:Happened", state=b"{}"
    )


async def custom_plans(pool: asyncpg.Pool, like: str) -> int:
    """Custom plans made for the session's statements whose text contains ``like``."""
    return int(
        await pool.fetchval(
            "SELECT coalesce(sum(custom_plans), 0) FROM pg_prepared_statements"
            " WHERE statement LIKE '%' || $1 || '%'",
            like,
        )
    )


async def test_a_cached_account_caught_up_with_its_store_keeps_one_plan(
    isolated_db: IsolatedDatabase,
) -> None:
    # Many streams, one long one, and statistics that know them: the long stream's newest
    # versions lie past the histogram, as a long-lived account's do on a large store.
    stream = uuid.uuid4()
    newest = 300
    for streams, length in (([stream], newest), ([uuid.uuid4() for _ in range(200)], 40)):
        await isolated_db.store.append(
            [happened(s, v) for s in streams for v in range(1, length + 1)]
        )
    owner = await asyncpg.connect(isolated_db.url)
    try:
        await owner.execute("ANALYZE stored_events")
    finally:
        await owner.close()

    pool = await create_pool(isolated_db.url, min_size=1, max_size=1)
    try:
        store = EventStore(pool)
        for n in range(CALLS):
            # What the repository asks for a cached account (ledger/store/repository.py).
            later = await store.load(stream, after_version=newest - n % 2)
            assert [e.originator_version for e in later] == list(
                range(newest - n % 2 + 1, newest + 1)
            )
        assert await custom_plans(pool, "originator_version >") == FIRST_CUSTOM_PLANS
    finally:
        await pool.close()
