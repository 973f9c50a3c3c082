"""``append_one()``, a lone command's write, answers as ``append()`` does in every case.

``write_batch`` sends a batch of one command of one event (at most one claim, no
snapshot) to ``append_one()``, anything else to ``append()``: each case below is written
alone (the first) and beside another command (the second), and must come out the same.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from eventsourcing.persistence import StoredEvent

from ledger.store.claims import Claim
from ledger.store.commit import ClaimRecord, Outcome, Writes, _is_one, write_batch
from ledger.store.event_store import EventStore
from tests.conftest import unique
from tests.integration.test_event_store import assert_chained, event

Write = Callable[[Writes], Awaitable[Outcome]]


@pytest.fixture(params=["alone", "beside another"])
def write(request: pytest.FixtureRequest, store: EventStore) -> Write:
    async def written(writes: Writes) -> Outcome:
        batch = [writes] if request.param == "alone" else [writes, Writes([event(uuid.uuid4(), 1)])]
        async with store.pool.acquire() as connection:
            outcomes = await write_batch(connection, batch)
        if request.param != "alone":
            assert outcomes[1].outcome == "ok"  # the other command is not held back
        return outcomes[0]

    return written


def claimed(key: str) -> ClaimRecord:
    return ClaimRecord(Claim("tests", key, b"fingerprint"), b'{"answer":1}')


async def test_an_event_and_its_claim_are_written_chained_and_in_order(
    write: Write, store: EventStore
) -> None:
    stream, key = uuid.uuid4(), unique("key")
    first = await write(Writes([event(stream, 1, b'{"n":1}')]))
    second = await write(Writes([event(stream, 2, b'{"n":2}')], claims=[claimed(key)]))

    assert (first.outcome, second.outcome) == ("ok", "ok")
    loaded = await store.load(stream)
    assert [e.notification_id for e in loaded] == [*first.positions, *second.positions]
    assert first.positions[0] < second.positions[0]
    assert_chained(loaded)
    found = await store.pool.fetchrow(
        "SELECT request_hash, response FROM claims WHERE scope = 'tests' AND key = $1", key
    )
    assert found is not None
    assert (bytes(found["request_hash"]), bytes(found["response"])) == (
        b"fingerprint",
        b'{"answer":1}',
    )


async def test_a_taken_version_is_a_conflict_and_writes_nothing(
    write: Write, store: EventStore
) -> None:
    stream, key = uuid.uuid4(), unique("key")
    await write(Writes([event(stream, 1)]))

    outcome = await write(Writes([event(stream, 1, b'{"again":1}')], claims=[claimed(key)]))

    assert (outcome.outcome, outcome.positions) == ("conflict", [])
    assert [e.state for e in await store.load(stream)] == [b"{}"]
    assert await store.pool.fetchval("SELECT count(*) FROM claims WHERE key = $1", key) == 0


async def test_a_taken_claim_is_claim_taken_and_writes_nothing(
    write: Write, store: EventStore
) -> None:
    key, stream = unique("key"), uuid.uuid4()
    await write(Writes([event(uuid.uuid4(), 1)], claims=[claimed(key)]))

    outcome = await write(Writes([event(stream, 1)], claims=[claimed(key)]))

    assert outcome.outcome == "claim-taken"
    assert await store.load(stream) == []


async def test_an_event_that_does_not_follow_its_stream_is_a_conflict(
    write: Write, store: EventStore
) -> None:
    stream = uuid.uuid4()
    await write(Writes([event(stream, 1)]))

    outcome = await write(Writes([event(stream, 3)]))  # version 2 was never stored

    assert outcome.outcome == "conflict"
    assert [e.originator_version for e in await store.load(stream)] == [1]


async def test_a_stream_or_key_another_transaction_writes_is_a_conflict_at_once(
    write: Write, store: EventStore, pool: asyncpg.Pool
) -> None:
    stream, key = uuid.uuid4(), unique("key")
    stalled = await pool.acquire()
    transaction = stalled.transaction()
    await transaction.start()
    try:
        [held] = await write_batch(stalled, [Writes([event(stream, 1)], claims=[claimed(key)])])
        assert held.outcome == "ok"

        same_stream = await write(Writes([event(stream, 1)]))
        same_key = await write(Writes([event(uuid.uuid4(), 1)], claims=[claimed(key)]))

        assert (same_stream.outcome, same_key.outcome) == ("conflict", "conflict")
    finally:
        await transaction.rollback()
        await pool.release(stalled)


async def test_a_lone_event_is_the_first_write_of_its_transaction_or_refused(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("INSERT INTO projection_positions (name) VALUES ('scratch')")
        with pytest.raises(asyncpg.InvalidTransactionStateError, match="first write"):
            await write_batch(connection, [Writes(events=[event(uuid.uuid4(), 1)])])


def test_only_a_lone_command_of_one_event_and_one_claim_at_most_takes_append_one() -> None:
    one = event(uuid.uuid4(), 1)
    assert _is_one(Writes([one], claims=[claimed("a")]))
    assert not _is_one(Writes([one, event(one.originator_id, 2)]))
    assert not _is_one(Writes([one], claims=[claimed("a"), claimed("b")]))
    assert not _is_one(Writes([one], snapshots=[StoredEvent(one.originator_id, 1, "t", b"{}")]))
    assert not _is_one(Writes([]))


@pytest.mark.parametrize("function", ["append_one", "append"])
async def test_a_callers_temporary_sequence_does_not_stand_in_for_the_owners(
    database_url: str, store: EventStore, function: str
) -> None:
    """The write functions run as the owner with pg_temp last in their search_path: a
    temporary sequence of the caller's with the sequence's name hands out no position.
    (The service's role may not make one at all; a superuser's session stands in here.)"""
    stream = uuid.uuid4()
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(
            "CREATE TEMP SEQUENCE stored_events_notification_id_seq START 1000000000"
        )
        await admin.execute(
            "GRANT USAGE ON SEQUENCE pg_temp.stored_events_notification_id_seq TO ledger_owner"
        )
        await admin.execute("SET ROLE ledger_service")
        if function == "append_one":
            [outcome] = await write_batch(admin, [Writes([event(stream, 1)])])
        else:
            [outcome] = await write_batch(admin, [Writes([event(stream, 1), event(stream, 2)])])
    finally:
        await admin.close()
    positions = outcome.result()
    assert max(positions) < 1_000_000_000
    assert [e.notification_id for e in await store.load(stream)] == positions
