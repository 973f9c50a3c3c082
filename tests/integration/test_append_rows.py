"""``write_batch`` stores exactly what it is given, however a batch's writes are shaped.

``append()`` takes a batch as rows (``append_row``: a command's n-th event beside its
n-th claim, snapshots apart) and takes them apart again in SQL. Random batches of
commands with any number of events, claims and snapshots, odd text and any bytes, some
of them conflicting or claiming a taken key, must leave the rows a plain model says:
each event, claim and snapshot of a command that succeeded byte for byte, in order,
chained, in one transaction, and nothing of a command that did not. (An event's state is
JSON, as the store needs; a claim's and a snapshot's bytes are any bytes.)
"""

from __future__ import annotations

import random
import uuid

import asyncpg
import msgspec
import pytest
from eventsourcing.persistence import StoredEvent

from ledger.store import commit
from ledger.store.claims import Claim
from ledger.store.commit import ClaimRecord, Writes, write_batch
from ledger.store.hash_chain import GENESIS, event_hash
from ledger.store.migrate import SERVICE_ROLE, set_up
from tests.conftest import IsolatedDatabase, unique

ODD = ["a", '"', "\\", ",", "(", ")", "{", "}", " ", "'", "NULL", "é", "\u2028", "\t", "\n", "x"]


def odd_text(rnd: random.Random) -> str:
    return "".join(rnd.choice(ODD) for _ in range(rnd.randint(0, 6)))


def json_state(rnd: random.Random) -> bytes:
    """An event's state: JSON (the store indexes a stream's first event's account_id)."""
    return msgspec.json.encode({"account_id": odd_text(rnd), "n": rnd.randrange(10**6)})


def any_bytes(rnd: random.Random) -> bytes:
    return rnd.randbytes(rnd.choice([0, 1, 32, 200]))


class Model:
    """The streams' heads and the claims taken, as the store should have them."""

    def __init__(self, rnd: random.Random, streams: int) -> None:
        self.rnd = rnd
        self.heads: dict[uuid.UUID | str, int] = {uuid.uuid4(): 0 for _ in range(streams)}
        self.scope = unique("rows")
        self.keys = [odd_text(rnd) + str(n) for n in range(8)]
        self.taken: set[str] = set()

    def command(self, streams: list[uuid.UUID | str]) -> Writes:
        rnd = self.rnd
        events = []
        for stream in streams:
            version = self.heads[stream] + rnd.choice([1, 1, 1, 1, 0, 2])  # 0: taken, 2: a gap
            for _ in range(rnd.randint(1, 2)):
                events.append(
                    StoredEvent(stream, max(version, 1), f"tests:{odd_text(rnd)}", json_state(rnd))
                )
                version += 1
        claims = [
            ClaimRecord(Claim(self.scope, rnd.choice(self.keys), any_bytes(rnd)), any_bytes(rnd))
            for _ in range(rnd.choice([0, 1, 1, 2, 3]))
        ]
        snapshots = [
            StoredEvent(e.originator_id, e.originator_version, "tests:Snapshot", any_bytes(rnd))
            for e in events
            if rnd.random() < 0.2
        ]
        return Writes(events=events, claims=claims, snapshots=snapshots)

    def batch(self) -> list[Writes]:
        """Commands on streams of their own (no two in a batch share one)."""
        free = list(self.heads)
        self.rnd.shuffle(free)
        batch = []
        for _ in range(self.rnd.randint(1, 8)):
            take = min(len(free), self.rnd.choice([0, 1, 1, 2]))
            streams, free = free[:take], free[take:]
            batch.append(self.command(streams))
        return batch

    def outcome(self, writes: Writes) -> str:
        """What the command should come to, recording it if it succeeds."""
        heads = dict(self.heads)
        for e in writes.events:
            if e.originator_version != heads[e.originator_id] + 1:
                return "conflict"
            heads[e.originator_id] = e.originator_version
        keys = [record.claim.key for record in writes.claims]
        if len(set(keys)) < len(keys) or self.taken.intersection(keys):
            return "claim-taken"
        self.heads = heads
        self.taken.update(keys)
        return "ok"


@pytest.mark.parametrize(
    ("seed", "rows_as_parameters"),
    [(seed, commit.ROWS_AS_PARAMETERS) for seed in range(6)] + [(seed, 0) for seed in range(2)],
)
async def test_random_batches_are_stored_exactly_as_given(
    isolated_db: IsolatedDatabase,
    seed: int,
    rows_as_parameters: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches as rows' fields (``commit._append_of``) and, with ``rows_as_parameters`` 0,
    every batch of a row or more as an array of rows, as a longer batch goes."""
    monkeypatch.setattr(commit, "ROWS_AS_PARAMETERS", rows_as_parameters)
    # A database of its own: its events' made-up topics and states are no events of the
    # ledger's, which the suite's projector tests, reading the shared store, could not fold.
    store = isolated_db.store
    rnd = random.Random(seed)
    model = Model(rnd, streams=10)
    expected_events: list[StoredEvent] = []
    expected_claims: dict[str, tuple[bytes, bytes]] = {}
    expected_snapshots: set[tuple[uuid.UUID | str, int, str, bytes]] = set()
    for n in range(12):
        batch = model.batch() if n else [Writes(events=[]), Writes(events=[])]  # no rows at all
        async with store.pool.acquire() as connection:
            outcomes = await write_batch(connection, batch)
        written: list[StoredEvent] = []
        for writes, outcome in zip(batch, outcomes, strict=True):
            assert outcome.outcome == model.outcome(writes), writes
            if outcome.outcome != "ok":
                assert outcome.positions == []
                continue
            positions = [
                await store.pool.fetchval(
                    "SELECT notification_id FROM stored_events"
                    " WHERE originator_id = $1 AND originator_version = $2",
                    e.originator_id,
                    e.originator_version,
                )
                for e in writes.events
            ]
            assert outcome.positions == positions
            expected_events.extend(writes.events)
            written.extend(writes.events)
            expected_claims.update(
                {r.claim.key: (r.claim.fingerprint, r.answer) for r in writes.claims}
            )
            expected_snapshots.update(
                (s.originator_id, s.originator_version, s.topic, s.state) for s in writes.snapshots
            )
        if written:  # one transaction, one time, positions in the batch's order
            rows = await store.pool.fetch(
                "SELECT transaction_id::text, recorded_at, notification_id FROM stored_events"
                " WHERE (originator_id, originator_version) IN"
                " (SELECT * FROM unnest($1::uuid[], $2::bigint[]))"
                " ORDER BY notification_id",
                [e.originator_id for e in written],
                [e.originator_version for e in written],
            )
            assert len({(r[0], r[1]) for r in rows}) == 1
            assert len(rows) == len(written)

    streams = list(model.heads)
    stored = await store.pool.fetch(
        "SELECT originator_id, originator_version, topic, state, recorded_at, hash"
        " FROM stored_events WHERE originator_id = ANY ($1::uuid[])"
        " ORDER BY originator_id, originator_version",
        streams,
    )
    assert [
        (r["originator_id"], r["originator_version"], r["topic"], bytes(r["state"])) for r in stored
    ] == sorted((e.originator_id, e.originator_version, e.topic, e.state) for e in expected_events)
    previous = {stream: GENESIS for stream in streams}
    for r in stored:
        stream = r["originator_id"]
        assert r["hash"] == event_hash(
            previous[stream],
            stream,
            r["originator_version"],
            r["recorded_at"],
            r["topic"],
            bytes(r["state"]),
        )
        previous[stream] = r["hash"]
    claims = await store.pool.fetch(
        "SELECT key, request_hash, response FROM claims WHERE scope = $1", model.scope
    )
    assert {r["key"]: (bytes(r["request_hash"]), bytes(r["response"])) for r in claims} == (
        expected_claims
    )
    snapshots = await store.pool.fetch(
        "SELECT originator_id, originator_version, topic, state FROM snapshots"
        " WHERE originator_id = ANY ($1::uuid[])",
        streams,
    )
    assert {
        (r["originator_id"], r["originator_version"], r["topic"], bytes(r["state"]))
        for r in snapshots
    } == expected_snapshots


FIFTEEN_ARRAYS = (
    "int, int[], uuid[], bigint[], text[], bytea[], int[], text[], text[], bytea[], bytea[],"
    " int[], uuid[], bigint[], text[], bytea[]"
)


async def test_a_database_set_up_before_rows_keeps_the_old_append_for_a_rolling_upgrade(
    isolated_db: IsolatedDatabase,
) -> None:
    """A database set up by the previous release has append() of fifteen arrays, which that
    release's processes still call while a rolling upgrade replaces them: set up again, it
    keeps that one, callable by the service's role, beside the append() of rows."""
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute("SET ROLE ledger_owner")
        await admin.execute(
            f"CREATE FUNCTION append({FIFTEEN_ARRAYS}) RETURNS void LANGUAGE sql AS ''"
        )
        await admin.execute("RESET ROLE")
        await admin.execute(f"REVOKE ALL ON FUNCTION append({FIFTEEN_ARRAYS}) FROM PUBLIC")
        await admin.execute(f"GRANT EXECUTE ON FUNCTION append({FIFTEEN_ARRAYS}) TO {SERVICE_ROLE}")

        # This release's migrations run again, as on the previous release's database.
        await admin.execute("DELETE FROM schema_migrations WHERE version >= 25")

        await set_up(admin)

        found = await admin.fetch(
            "SELECT p.oid::regprocedure::text AS signature,"
            " has_function_privilege($1, p.oid, 'EXECUTE') AS callable"
            " FROM pg_proc p WHERE p.proname = 'append' ORDER BY 1",
            SERVICE_ROLE,
        )
    finally:
        await admin.close()
    assert [tuple(row) for row in found] == [
        ("append(integer,append_row[],append_row[])", True),
        (
            "append(integer,integer[],uuid[],bigint[],text[],bytea[],integer[],text[],text[],"
            "bytea[],bytea[],integer[],uuid[],bigint[],text[],bytea[])",
            True,
        ),
    ]
    [outcome] = await isolated_db.store.pool.fetch(
        "SELECT outcome FROM append(1, $1, '{}')",
        [(1, uuid.uuid4(), 1, "tests:Happened", b"{}", None, None, None, None)],
    )
    assert outcome["outcome"] == "ok"
