"""The event store on a real PostgreSQL: append-only, optimistic, gap-safe ordering."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from eventsourcing.persistence import StoredEvent

from ledger.store.claims import Claim
from ledger.store.commit import ClaimRecord, Writes, write_batch
from ledger.store.event_store import (
    ACCOUNT_PAGE,
    ConcurrencyConflict,
    EventStore,
    RecordedEvent,
    ReplayedEvent,
    read_after,
    read_part_until,
    read_whole_appends_after,
    visible_head,
)
from ledger.store.hash_chain import GENESIS, event_hash
from tests.conftest import IsolatedDatabase, unique
from tests.support.events import recorded_since, settled, tail_position
from tests.support.plans import indexes_searched
from tests.support.waiting import until


def event(stream: uuid.UUID, version: int, body: bytes = b"{}") -> StoredEvent:
    return StoredEvent(
        originator_id=stream, originator_version=version, topic="tests:Happened", state=body
    )


async def test_appended_events_load_in_version_order(store: EventStore) -> None:
    stream = uuid.uuid4()
    positions = await store.append([event(stream, 1, b'{"n":1}'), event(stream, 2, b'{"n":2}')])

    loaded = await store.load(stream)

    assert [e.originator_version for e in loaded] == [1, 2]
    assert [e.state for e in loaded] == [b'{"n":1}', b'{"n":2}']
    assert [e.notification_id for e in loaded] == positions
    assert positions[0] < positions[1]
    assert loaded[0].recorded_at <= loaded[1].recorded_at


async def test_append_at_a_taken_version_raises_and_writes_nothing(store: EventStore) -> None:
    stream, other = uuid.uuid4(), uuid.uuid4()
    await store.append([event(stream, 1)])

    with pytest.raises(ConcurrencyConflict):
        await store.append([event(other, 1), event(stream, 1)])

    assert await store.load(other) == []
    assert len(await store.load(stream)) == 1


async def test_two_concurrent_appends_at_one_version_leave_exactly_one(store: EventStore) -> None:
    for _ in range(20):
        stream = uuid.uuid4()
        outcomes = await asyncio.gather(
            store.append([event(stream, 1, b'{"writer":"a"}')]),
            store.append([event(stream, 1, b'{"writer":"b"}')]),
            return_exceptions=True,
        )

        conflicts = [o for o in outcomes if isinstance(o, ConcurrencyConflict)]
        assert len(conflicts) == 1, outcomes
        assert len(await store.load(stream)) == 1


async def test_a_failed_append_releases_the_ordering_lock(store: EventStore) -> None:
    stream = uuid.uuid4()
    await store.append([event(stream, 1)])
    with pytest.raises(ConcurrencyConflict):
        await store.append([event(stream, 1)])

    # Another writer must not wait on a lock the failed one kept.
    async with asyncio.timeout(5):
        await store.append([event(stream, 2)])


async def test_not_even_a_superuser_updates_deletes_or_truncates_events_by_accident(
    store: EventStore, database_url: str
) -> None:
    stream, key = uuid.uuid4(), unique("key")
    claim = ClaimRecord(Claim("tests", key, b"fingerprint"), b'{"answer":1}')
    async with store.pool.acquire() as connection:
        [outcome] = await write_batch(
            connection,
            [Writes(events=[event(stream, 1)], claims=[claim], snapshots=[event(stream, 1)])],
        )
    outcome.result()
    statements = [
        ("UPDATE stored_events SET state = '\\x7b7d' WHERE originator_id = $1", stream),
        ("DELETE FROM stored_events WHERE originator_id = $1", stream),
        ("UPDATE snapshots SET state = '\\x7b7d' WHERE originator_id = $1", stream),
        ("DELETE FROM snapshots WHERE originator_id = $1", stream),
        ("UPDATE claims SET response = '\\x7b7d' WHERE key = $1", key),
        ("DELETE FROM claims WHERE key = $1", key),
    ]
    admin = await asyncpg.connect(database_url)
    try:
        for statement, argument in statements:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await admin.execute(statement, argument)
        for table in ("stored_events", "snapshots", "claims"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await admin.execute(f"TRUNCATE {table}")
        assert await admin.fetchval("SELECT response FROM claims WHERE key = $1", key) == (
            b'{"answer":1}'
        )
    finally:
        await admin.close()
    assert len(await store.load(stream)) == 1


async def test_append_must_be_the_first_write_of_its_transaction(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("INSERT INTO projection_positions (name) VALUES ('scratch')")
        with pytest.raises(asyncpg.InvalidTransactionStateError, match="first write"):
            await write_batch(connection, [Writes(events=[event(uuid.uuid4(), 1)])])


async def test_an_accounts_streams_are_found_through_the_index_of_first_events(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    account, session = uuid.uuid4(), uuid.uuid4()
    name = unique("acct")
    opened = f'{{"account_id":"{name}"}}'.encode()
    await store.append([event(account, 1, opened), event(session, 1, opened)])
    await store.append([event(account, 2), event(uuid.uuid4(), 1, b'{"account_id":"other"}')])
    await settled(store)
    page: list[RecordedEvent] = []

    async def whole_page() -> bool:
        # One look may still count a transaction of another database that ended between
        # the watermark's snapshot and its read of the sessions: the next passes it.
        page[:] = await store.account_page(name, after=0, limit=10)
        return len(page) >= 3

    await until(whole_page, what="the account's page up to its last event")

    assert [(e.originator_id, e.originator_version) for e in page] == [
        (account, 1),
        (session, 1),
        (account, 2),
    ]
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SET LOCAL enable_seqscan = off")
        searched = await indexes_searched(connection, ACCOUNT_PAGE, name, 0, 10)
    assert "stored_events_account_streams_idx" in searched


async def test_reader_never_sees_a_position_before_one_it_already_read(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    """An earlier-numbered append that commits last is not passed over."""
    start = await tail_position(store)
    early, late = uuid.uuid4(), uuid.uuid4()

    slow = await pool.acquire()
    transaction = slow.transaction()
    await transaction.start()
    try:
        [outcome] = await write_batch(slow, [Writes(events=[event(early, 1)])])
        [early_position] = outcome.result()
        # A later append commits while the earlier one is still open.
        [late_position] = await store.append([event(late, 1)])
        assert early_position < late_position

        seen_while_open = await store.read_all(after=start)
        assert late_position not in [e.notification_id for e in seen_while_open]
        await transaction.commit()
    finally:
        await pool.release(slow)

    seen = [e.notification_id for e in await recorded_since(store, start)]
    assert early_position in seen
    assert late_position in seen
    assert seen.index(early_position) < seen.index(late_position)


async def test_a_transaction_open_in_another_database_holds_no_reader_back(
    isolated_db: IsolatedDatabase, pool: asyncpg.Pool
) -> None:
    """The watermark was the oldest transaction of the whole server: one left open in
    another database (here the suite's own) held every view and every as-of answer (a
    503 after 2 s) for as long as it ran (an HTTP review)."""
    store = isolated_db.store
    start = await tail_position(store)
    elsewhere = await pool.acquire()
    transaction = elsewhere.transaction()
    await transaction.start()
    try:
        await elsewhere.fetchval("SELECT pg_current_xact_id()")  # a writer: it has an id
        [position] = await store.append([event(uuid.uuid4(), 1)])

        # One look may still count a transaction of any database that ended between its
        # snapshot and its read of the sessions (the watermark's rule): the next passes it.
        # The transaction above stays open all along, and held every look before the fix.
        seen: list[int] = []

        async def appended_seen() -> bool:
            seen[:] = [e.notification_id for e in await store.read_all(after=start)]
            return bool(seen)

        await until(appended_seen, what="the append seen by a reader")
        await store.wait_for_appends_before(datetime.now(UTC), seconds=1)
        async with isolated_db.pool.acquire() as connection:

            async def head_visible() -> bool:
                return await visible_head(connection) == position

            await until(head_visible, what="the append's position the visible head")
    finally:
        await transaction.rollback()
        await pool.release(elsewhere)

    assert seen == [position]


async def test_an_append_whose_rows_land_late_holds_no_other_and_is_not_passed_over(
    isolated_db: IsolatedDatabase,
) -> None:
    """Only the ids, the time and the transaction id are handed out under the ordering
    lock: an append whose inserts are slow (here, a trigger sleeps on its row) lets a
    later one through, and readers still see the later one only after the earlier one."""
    store = isolated_db.store
    admin = await asyncpg.connect(isolated_db.url)
    await admin.execute(
        """CREATE FUNCTION slow_row() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN PERFORM pg_sleep(3); RETURN NEW; END $$;
           CREATE TRIGGER slow_row BEFORE INSERT ON stored_events
               FOR EACH ROW WHEN (NEW.topic = 'tests:Slow') EXECUTE FUNCTION slow_row()"""
    )
    try:
        start = await tail_position(store)
        slow_stream = uuid.uuid4()
        slow = asyncio.create_task(store.append([StoredEvent(slow_stream, 1, "tests:Slow", b"{}")]))
        for _ in range(1000):  # until the slow append sleeps in its trigger (at most 10 s)
            if await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
            ):
                break
            await asyncio.sleep(0.01)
        [late_position] = await store.append([event(uuid.uuid4(), 1)])
        assert not slow.done()  # the later append did not wait for the slow one's rows
        seen_meanwhile = [e.notification_id for e in await store.read_all(after=start)]
        assert late_position not in seen_meanwhile
        [early_position] = await slow
    finally:
        await admin.execute("DROP TRIGGER slow_row ON stored_events; DROP FUNCTION slow_row()")
        await admin.close()

    assert early_position < late_position
    seen = [e.notification_id for e in await recorded_since(store, start)]
    assert seen.index(early_position) < seen.index(late_position)


@pytest.mark.parametrize("one_fails", [False, True], ids=["all at once", "one by one"])
async def test_each_command_of_a_batch_gets_the_positions_of_its_own_events(
    store: EventStore, one_fails: bool
) -> None:
    """A batch is written in one go, or command by command once a version or a claim
    turns out taken: either way each command's positions are its own events', ascending."""
    taken = uuid.uuid4()
    await store.append([event(taken, 1)])
    streams = [uuid.uuid4() for _ in range(6)]
    batch = [
        Writes(events=[event(stream, v) for v in range(1, 1 + n % 3 + 1)])
        for n, stream in enumerate(streams)
    ]
    if one_fails:
        batch[2] = Writes(events=[event(taken, 1)])
    async with store.pool.acquire() as connection:
        outcomes = await write_batch(connection, batch)

    for n, (writes, outcome) in enumerate(zip(batch, outcomes, strict=True)):
        if one_fails and n == 2:
            assert outcome.outcome == "conflict"
            continue
        stored = await store.load(writes.events[0].originator_id)
        assert outcome.outcome == "ok"
        assert outcome.positions == [e.notification_id for e in stored]
        assert outcome.positions == sorted(outcome.positions)
        assert len(stored) == len(writes.events)


async def test_a_writer_stalled_mid_transaction_holds_up_no_other_writer(
    store: EventStore, pool: asyncpg.Pool
) -> None:
    """A client that appended and then stalled before committing (its stream and its claim
    are locked) delays nobody: other streams commit at once, and a command on the same
    stream or key is answered as a conflict (decided again) instead of waiting."""
    stalled_stream = uuid.uuid4()
    claim = ClaimRecord(Claim("tests", unique("stalled-key"), b"h"), b"{}")
    stalled = await pool.acquire()
    transaction = stalled.transaction()
    await transaction.start()
    try:
        [outcome] = await write_batch(
            stalled, [Writes(events=[event(stalled_stream, 1)], claims=[claim])]
        )
        assert outcome.outcome == "ok"
        async with asyncio.timeout(5):  # the service's lock_timeout is 5 s: far less here
            others = await asyncio.gather(
                *(store.append([event(uuid.uuid4(), 1)]) for _ in range(20))
            )
            async with pool.acquire() as connection:
                same_stream, same_claim = await write_batch(
                    connection,
                    [
                        Writes(events=[event(stalled_stream, 1)]),
                        Writes(events=[event(uuid.uuid4(), 1)], claims=[claim]),
                    ],
                )
        assert all(len(positions) == 1 for positions in others)
        assert (same_stream.outcome, same_claim.outcome) == ("conflict", "conflict")
    finally:
        await transaction.rollback()
        await pool.release(stalled)
    assert await store.load(stalled_stream) == []


async def test_the_service_role_can_neither_rewrite_history_nor_change_the_rules(
    pool: asyncpg.Pool,
) -> None:
    """Least privilege: what a compromised service process could try, refused by PostgreSQL."""
    attempts = [
        "UPDATE stored_events SET state = state",
        "DELETE FROM stored_events",
        "TRUNCATE stored_events",
        "INSERT INTO stored_events (originator_id, originator_version, topic, state, hash) "
        "VALUES (gen_random_uuid(), 1, 'x', '\\x7b7d', '\\x00')",
        "ALTER TABLE stored_events DISABLE TRIGGER stored_events_no_update_or_delete",
        "ALTER TABLE stored_events ADD COLUMN forged text",
        "DROP TABLE stored_events",
        "UPDATE snapshots SET state = state",
        "DELETE FROM snapshots",
        "UPDATE claims SET response = response",
        "DELETE FROM claims",
        "CREATE OR REPLACE FUNCTION event_hash(bytea, uuid, bigint, timestamptz, text, bytea) "
        "RETURNS bytea LANGUAGE sql AS 'SELECT $1'",
        "CREATE TABLE shadow (n int)",
        "SET session_replication_role = replica",
        "TRUNCATE claims",
        # A temporary sequence of this name would stand in for the owner's in append().
        "CREATE TEMP SEQUENCE stored_events_notification_id_seq",
        "CREATE TEMP TABLE stored_events (n int)",
        # A security review's run as ledger_service, kept: the other append-only tables'
        # triggers, rights it might grant itself, a schema of its own, the positions.
        "ALTER TABLE snapshots DISABLE TRIGGER ALL",
        "ALTER TABLE claims DISABLE TRIGGER ALL",
        "DROP TABLE snapshots",
        "DROP TABLE claims",
        "TRUNCATE snapshots",
        "GRANT ledger_owner TO ledger_service",
        "SET ROLE ledger_owner",
        "CREATE SCHEMA ledger_owner",
        "CREATE OR REPLACE FUNCTION stored_events_are_append_only() RETURNS trigger "
        "LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'",
        "CREATE TRIGGER shadow BEFORE INSERT ON balances FOR EACH ROW "
        "EXECUTE FUNCTION stored_events_are_append_only()",
        "LOCK TABLE stored_events IN EXCLUSIVE MODE",
        "SELECT setval('stored_events_notification_id_seq', 1)",
        "INSERT INTO schema_migrations (version, name) VALUES (9999, 'forged')",
    ]
    async with pool.acquire() as connection:
        assert await connection.fetchval("SELECT current_user") == "ledger_service"
        owned = await connection.fetchval(
            "SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles "
            "WHERE rolname = current_user)"
        )
        assert owned == 0
        for statement in attempts:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with connection.transaction():
                    await connection.execute(statement)


async def test_concurrent_writers_and_a_tailing_reader_agree_on_one_order(
    store: EventStore,
) -> None:
    """A reader tailing during 400 concurrent appends reads every event once, in order.

    Once the writers are done the reader goes on until it has read them all: a
    transaction elsewhere on the server (another database's, even) holds the
    watermark back for as long as it runs, so "nothing new" is not "nothing more".
    """
    start = await tail_position(store)
    streams = [uuid.uuid4() for _ in range(400)]
    written: list[int] = []
    done = asyncio.Event()
    read: list[int] = []

    async def tail() -> None:
        position = start
        for _ in range(100_000):  # ends the test rather than hangs it
            batch = await store.read_all(after=position, limit=50)
            for recorded in batch:
                assert recorded.notification_id > position
                position = recorded.notification_id
                read.append(position)
            if done.is_set() and position >= max(written):
                return
            if not batch:
                await asyncio.sleep(0.001)

    async def write(stream: uuid.UUID) -> int:
        [position] = await store.append([event(stream, 1)])
        return position

    reader = asyncio.create_task(tail())
    written.extend(await asyncio.gather(*(write(s) for s in streams)))
    done.set()
    await reader

    mine = [p for p in read if p in set(written)]
    assert sorted(mine) == sorted(written)
    assert read == sorted(read)


async def test_each_event_is_chained_to_the_one_before_it_in_its_stream(
    store: EventStore,
) -> None:
    stream = uuid.uuid4()
    await store.append([event(stream, 1, b'{"n":1}')])
    await store.append([event(stream, 2, b'{"n":2}'), event(stream, 3, b'{"n":3}')])

    loaded = await store.load(stream)

    assert_chained(loaded)


def assert_chained(stream: list[RecordedEvent]) -> None:
    """Each event's hash covers it and the hash of the one before it (genesis first)."""
    previous = GENESIS
    for recorded in stream:
        expected = event_hash(
            previous,
            recorded.originator_id,
            recorded.originator_version,
            recorded.recorded_at,
            recorded.topic,
            recorded.state,
        )
        assert recorded.hash == expected
        previous = recorded.hash


async def test_a_command_whose_events_do_not_follow_its_stream_fails_alone_in_its_batch(
    store: EventStore,
) -> None:
    gapped, growing, fresh = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await store.append([event(gapped, 1), event(growing, 1)])
    batch = [
        Writes(events=[event(growing, 2), event(growing, 3), event(fresh, 1)]),
        Writes(events=[event(gapped, 3)]),  # version 2 was never stored
        Writes(events=[event(gapped, 2), event(fresh, 2)]),  # fresh/1 is the batch's own
    ]
    async with store.pool.acquire() as connection:
        outcomes = await write_batch(connection, batch)

    assert [o.outcome for o in outcomes] == ["ok", "conflict", "conflict"]
    assert [e.originator_version for e in await store.load(gapped)] == [1]
    assert [e.originator_version for e in await store.load(fresh)] == [1]
    grown = await store.load(growing)
    assert [e.originator_version for e in grown] == [1, 2, 3]
    assert_chained(grown)


async def test_the_parts_of_the_streams_hold_every_event_once_each_in_commit_order(
    isolated_db: IsolatedDatabase, pool: asyncpg.Pool
) -> None:
    """What the rebuild's worker processes read: whole streams, dealt out by their id, the
    events up to ``visible_head`` in one snapshot, which later statements in it keep.

    Each statement looks at the watermark afresh: a transaction of another database that
    ends between two of them counts at the second (its rows are not in the snapshot), so a
    second look (``read_after``, the test's reference once) can stand lower than the first.
    One such transaction ends here between the head and the reads, as others' did under load.
    """
    store = isolated_db.store
    streams = [uuid.UUID(int=n) for n in range(1, 25)]  # its own database: no one else's ids
    elsewhere = await pool.acquire()  # the suite's database: another database on the server
    transaction = elsewhere.transaction()
    await transaction.start()
    ended: list[bool] = []
    try:
        await elsewhere.fetchval("SELECT pg_current_xact_id()")  # older than every append
        for version in (1, 2, 3):
            await store.append([event(stream, version) for stream in streams[version:]])
        last = await settled(store)
        parts: list[list[ReplayedEvent]] = []
        everything: list[int] = []

        # A look's head may stop short of ``last`` (the watermark's rule, as above): then the
        # look is taken again, in a fresh snapshot.
        async def looked_up_to_the_last() -> bool:
            async with (
                isolated_db.pool.acquire() as connection,
                connection.transaction(isolation="repeatable_read"),
            ):
                head = await visible_head(connection)
                if not ended:
                    await transaction.commit()
                    ended.append(True)
                parts[:] = [
                    [
                        e
                        async for chunk in read_part_until(connection, head, part, 3, chunk=5)
                        for e in chunk
                    ]
                    for part in range(3)
                ]
                everything[:] = [
                    row[0]
                    for row in await connection.fetch(
                        """SELECT notification_id FROM stored_events
                           WHERE notification_id <= $1 ORDER BY notification_id""",
                        head,
                    )
                ]
            return head == last

        await until(looked_up_to_the_last, what="a look whose head is the last append's")
    finally:
        if not ended:
            await transaction.rollback()
        await pool.release(elsewhere)

    assert len(everything) == 23 + 22 + 21
    assert sorted(e.notification_id for part in parts for e in part) == everything
    for part in parts:
        assert [e.notification_id for e in part] == sorted(e.notification_id for e in part)
    owners = {e.originator_id: n for n, part in enumerate(parts) for e in part}
    assert all(owners[e.originator_id] == n for n, part in enumerate(parts) for e in part)
    assert all(parts), "24 streams dealt to 3 parts left one empty"


async def test_a_batch_read_for_the_views_never_ends_inside_one_append(
    isolated_db: IsolatedDatabase,
) -> None:
    """The projector's batches hold whole commands: a view never shows half of one."""
    store = isolated_db.store
    first, second = uuid.uuid4(), uuid.uuid4()
    await store.append([event(first, 1)])
    # One append of 70 events (more than the read's look-ahead), then one of two.
    long = await store.append([event(second, version) for version in range(1, 71)])
    last = await store.append([event(first, 2), event(first, 3)])
    await settled(store)
    batch: list[RecordedEvent] = []
    after_it: list[RecordedEvent] = []
    plain: list[RecordedEvent] = []

    # A look may stop short of what settled() saw (a transaction of another database that
    # ended between the watermark's snapshot and its read of the sessions counts there):
    # then before an append, never inside one. Each read is taken again until it does not.
    async with isolated_db.pool.acquire() as connection:

        async def batch_past_the_first() -> bool:
            batch[:] = await read_whole_appends_after(connection, 0, 2)
            return any(e.notification_id >= long[0] for e in batch)

        async def after_it_read() -> bool:
            after_it[:] = await read_whole_appends_after(connection, batch[-1].notification_id, 1)
            return bool(after_it)

        async def plain_read() -> bool:
            plain[:] = await read_after(connection, 0, 2)
            return len(plain) >= 2

        await until(batch_past_the_first, what="a batch reading past the first append")
        await until(after_it_read, what="a batch after it")
        await until(plain_read, what="a plain read of two")

    assert [e.notification_id for e in batch] == [batch[0].notification_id, *long]
    assert [e.notification_id for e in after_it] == last
    assert len(plain) == 2  # the audit's and the event feeds' pages keep their limit
