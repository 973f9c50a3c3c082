"""The projector's sessions keep one plan a statement (api/database.PROJECTOR_SETTINGS).

Left to choose, PostgreSQL planned the projector's reads again on every batch once the
store was large: its estimates for "after position $1" and "= any($1)" grow with the
tables, so a custom plan looked cheaper each time, and planning cost more than running.
On a test's small store it picks the generic plan too, but only after five custom ones:
with the projector's settings no statement is planned for its parameters at all.
"""

from __future__ import annotations

from api.database import PROJECTOR_SETTINGS, SERVICE_SETTINGS, create_pool
from ledger.commands import PlaceHold, SpendCredits
from ledger.store.event_store import EventStore
from projections.runner import all_projections
from tests.conftest import IsolatedDatabase
from tests.support.events import settled, views_past
from tests.support.ledger import open_account


async def plans_after_batches(isolated_db: IsolatedDatabase, settings: dict[str, str]) -> int:
    """Custom plans made on the one session a projector's pool of ``settings`` ran twelve
    batches of spends and holds on."""
    ledger = isolated_db.ledger()
    account_id = f"acct_plans_{len(settings)}"
    await open_account(ledger, account_id, 1000)
    pool = await create_pool(isolated_db.url, min_size=1, max_size=1, server_settings=settings)
    try:
        store = EventStore(pool)
        projections = all_projections(remembering=True)
        for n in range(12):
            await ledger.execute(
                SpendCredits(account_id=account_id, amount=1, reason="job", idempotency_key=f"s{n}")
            )
            await ledger.execute(
                PlaceHold(
                    account_id=account_id,
                    amount=1,
                    expires_in_seconds=60,
                    reason="work",
                    idempotency_key=f"h{n}",
                )
            )
            # Past settled()'s position: one catch-up stops at its own look's watermark.
            tail = await settled(isolated_db.store)
            assert await views_past(store, tail, projections) > 0
        custom = await pool.fetchval("SELECT sum(custom_plans) FROM pg_prepared_statements")
    finally:
        await pool.close()
    return int(custom)


async def test_the_projector_s_sessions_plan_no_statement_for_its_parameters(
    isolated_db: IsolatedDatabase,
) -> None:
    assert await plans_after_batches(isolated_db, PROJECTOR_SETTINGS) == 0
    # The service's own sessions leave it to PostgreSQL, which tries custom plans first.
    assert await plans_after_batches(isolated_db, SERVICE_SETTINGS) > 0
