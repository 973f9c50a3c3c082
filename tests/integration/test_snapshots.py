"""Snapshots: long histories load from the newest snapshot, and give the same state."""

from __future__ import annotations

import asyncpg

from ledger.domain.account import CreditAccount
from ledger.domain.ids import account_stream_id
from ledger.service import Ledger
from ledger.store.event_store import LOAD_MANY, EventStore
from ledger.store.repository import SNAPSHOT_EVERY
from tests.conftest import unique
from tests.support.ledger import save
from tests.support.plans import rows_read_inside


async def test_a_snapshot_is_taken_every_hundred_events_and_loads_the_same_state(
    ledger: Ledger, store: EventStore, pool: asyncpg.Pool
) -> None:
    account_id = unique("acct")
    account = CreditAccount.open(account_id, 10_000, "2026-11")
    await save(ledger, account)
    for n in range(250):
        account.spend(1 + n % 3, "work") if n % 5 else account.purchase(f"cs_{n}", 10)
        await save(ledger, account)

    stream = account_stream_id(account_id)
    versions = [
        row[0]
        for row in await pool.fetch(
            "SELECT originator_version FROM snapshots WHERE originator_id = $1 ORDER BY 1", stream
        )
    ]
    loaded = await ledger.repository.get(CreditAccount, stream, fresh=True)
    without_snapshots = None
    for recorded in await store.load(stream):
        without_snapshots = ledger.repository.mapper.to_domain_event(recorded).mutate(
            without_snapshots
        )

    assert versions == [SNAPSHOT_EVERY, 2 * SNAPSHOT_EVERY]
    assert loaded is not None
    assert without_snapshots is not None
    assert loaded.version == without_snapshots.version == 251
    assert vars(loaded) == {**vars(without_snapshots), "_pending_events": []}
    assert isinstance(loaded.balance, int)


async def test_an_as_of_replay_ignores_snapshots_taken_after_that_moment(
    ledger: Ledger, pool: asyncpg.Pool
) -> None:
    account_id = unique("acct")
    account = CreditAccount.open(account_id, 1000, "2026-11")
    await save(ledger, account)
    for _ in range(SNAPSHOT_EVERY + 20):
        account.purchase("cs_1", 1)
        await save(ledger, account)
    stream = account_stream_id(account_id)
    moment = await pool.fetchval(
        "SELECT recorded_at FROM stored_events WHERE originator_id = $1 AND originator_version = 50",
        stream,
    )

    then = await ledger.repository.get(CreditAccount, stream, as_of=moment)

    assert then is not None
    assert then.version == 50
    assert then.topup_balance == 49


async def test_loading_streams_together_reads_from_their_newest_snapshot_on(
    ledger: Ledger, store: EventStore, database_url: str
) -> None:
    """What the cache misses go through (``load_many_from_snapshots``): the snapshot
    spares reading the events before it, however many there are."""
    account_id = unique("acct")
    account = CreditAccount.open(account_id, 10_000, "2026-11")
    await save(ledger, account)
    for _ in range(2 * SNAPSHOT_EVERY + 20):
        account.spend(1, "work")
        await save(ledger, account)
    stream, unknown = account_stream_id(account_id), account_stream_id(unique("nobody"))

    loaded, nothing = await store.load_many_from_snapshots([stream, unknown])

    assert loaded is not None
    snapshot, events = loaded
    assert nothing is None
    assert snapshot is not None
    assert snapshot.originator_version == 2 * SNAPSHOT_EVERY
    assert [e.originator_version for e in events] == list(
        range(2 * SNAPSHOT_EVERY + 1, 2 * SNAPSHOT_EVERY + 22)
    )
    # The newest snapshot (read, and its version looked up to bound the events) and the
    # 21 events after it; the query this replaced read all 221 events and both snapshots.
    # (One stream: see rows_read.)
    assert await rows_read_inside(database_url, LOAD_MANY, [stream]) == 2 + 21
