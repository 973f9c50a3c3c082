"""The API's statements keep one plan on a large store (the service's own sessions, which
leave the choice to PostgreSQL: api/database.SERVICE_SETTINGS).

PostgreSQL plans a prepared statement for its parameters five times, then keeps the
generic plan unless those custom plans looked cheaper: as the tables grow, a value near
the end of a column's histogram makes every custom plan look cheaper, so the statement is
planned again on every call, which cost more than running it. And the plan it keeps must
serve every value the service passes: a generic plan cannot start an index scan at a
parameter it only filters on.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
from eventsourcing.persistence import StoredEvent

from api.database import create_pool
from ledger.commands import SpendCredits
from ledger.store.event_store import EventStore
from projections.queries import NEWEST_FIRST
from tests.conftest import IsolatedDatabase
from tests.support.events import caught_up
from tests.support.ledger import open_account

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


def rows_looked_at(node: dict[str, Any]) -> int:
    """Rows the plan's table scans read, those their filters then dropped included."""
    own = 0
    if "Relation Name" in node:
        own = (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
    return int(own) + sum(rows_looked_at(child) for child in node.get("Plans", []))


async def test_a_page_of_transactions_deep_in_an_account_reads_that_page_only(
    isolated_db: IsolatedDatabase,
) -> None:
    ledger = isolated_db.ledger()
    try:
        await open_account(ledger, "acct_deep_pages", 1000)
        for n in range(40):
            await ledger.execute(
                SpendCredits(
                    account_id="acct_deep_pages", amount=1, reason="job", idempotency_key=f"s{n}"
                )
            )
    finally:
        await ledger.uow.committer.stop()
    await caught_up(isolated_db.store)
    positions = await isolated_db.pool.fetch(
        "SELECT position FROM statement_lines WHERE account_id = $1 ORDER BY position DESC",
        "acct_deep_pages",
    )
    cursor = positions[-6]["position"]  # five lines from the oldest

    page = NEWEST_FIRST.format(columns="position", table="statement_lines")
    async with isolated_db.pool.acquire() as connection:
        # The plan PostgreSQL keeps for the statement on a large store: the generic one.
        await connection.execute(
            f"PREPARE page(text, bigint, int) AS {page}; SET plan_cache_mode = force_generic_plan"
        )
        try:
            # EXECUTE takes no bound parameters: the values are written in.
            execute = f"EXECUTE page('acct_deep_pages', {int(cursor)}, 3)"
            [plan] = json.loads(
                await connection.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {execute}")
            )
            lines = await connection.fetch(execute)
        finally:
            await connection.execute("DEALLOCATE page; RESET plan_cache_mode")
    assert [line["position"] for line in lines] == [p["position"] for p in positions[-5:-2]]
    assert rows_looked_at(plan["Plan"]) == 3
