"""``ledger relay`` against a real nats-server: every event once, in order, through kills and outages.

Each test starts a nats-server of its own (a free port, a JetStream store in a
temporary folder) and runs the relay as operators do, ``python -m api.cli relay``
in a process of its own; a JetStream consumer then reads the stream back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path

import asyncpg
import msgspec
import nats.errors
import nats.js.errors
import pytest
from eventsourcing.persistence import StoredEvent
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from api.database import as_role
from api.metrics import REGISTRY, refresh_gauges
from ledger.store import wakeups
from ledger.store.event_store import NOTIFY_CHANNEL, EventStore, RecordedEvent
from ledger.store.migrate import RELAY_ROLE, SERVICE_ROLE
from relay.messages import MSG_ID_HEADER, decode, outgoing
from relay.positions import Connection
from relay.publisher import BrokerUnavailable, JetStreamPublisher, StreamSettings, servers
from relay.runner import Relay, RelayRefused, relay_settings
from tests.conftest import IsolatedDatabase
from tests.support.certificates import certificate_for_localhost
from tests.support.cli import ROOT
from tests.support.events import recorded_since
from tests.support.nats_server import NatsServer, connected, nats_server_binary
from tests.support.servers import bind_free_port
from tests.support.waiting import until

pytestmark = pytest.mark.slow

STREAM = "LEDGER_EVENTS"
PREFIX = "ledger.events"
TOPICS = ("tests.relay:CreditsSpent", "tests.relay:CreditsPurchased", "tests.relay:MonthReset")
WAIT_SECONDS = 120


def _binary() -> str:
    binary = nats_server_binary()
    if binary is None:
        pytest.skip(
            "no nats-server binary on PATH or in /usr/sbin (Debian: apt-get install "
            "nats-server): the relay tests need a real NATS with JetStream"
        )
    return binary


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(_binary(), tmp_path / "nats")
    server.folder.mkdir()
    try:
        yield server
    finally:
        server.kill()


@contextlib.contextmanager
def nats_server_with(folder: Path, *args: str) -> Iterator[NatsServer]:
    """A nats-server started with more options; the caller starts it."""
    server = NatsServer(_binary(), folder, args)
    folder.mkdir()
    try:
        yield server
    finally:
        server.kill()


class RelayProcess:
    """``ledger relay`` as a process of its own; each start logs to a file of its own."""

    def __init__(self, database_url: str, nats_url: str, folder: Path, *args: str) -> None:
        self.command = [sys.executable, "-m", "api.cli", "relay", "--to", nats_url, *args]
        self.env = {**os.environ, "DATABASE_URL": database_url}
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []

    def start(self) -> None:
        log = self.folder / f"relay-{len(self.logs) + 1}.log"
        self.logs.append(log)
        with log.open("wb") as output:
            self.process = subprocess.Popen(  # noqa: S603
                self.command,
                env=self.env,
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    async def stop(self, seconds: float = 60) -> int:
        """SIGTERM, as a supervisor stops it; its exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.process.wait, seconds)

    def log_text(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')}"
            for path in self.logs
            if path.exists()
        )


@pytest.fixture
def relay_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "relay"
    folder.mkdir()
    return folder


@contextlib.contextmanager
def relay_process(
    database: IsolatedDatabase, nats_server: NatsServer, folder: Path, *args: str
) -> Iterator[RelayProcess]:
    relay = RelayProcess(database.url, nats_server.url, folder, *args)
    try:
        yield relay
    finally:
        if relay.running():
            relay.kill()


class Writer:
    """Appends events from several tasks at once, so commits interleave; keeps their positions."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.positions: list[int] = []
        self.rng = random.Random(1729)

    async def append_chunk(self, streams: int = 10, versions: int = 10) -> None:
        events = []
        for _ in range(streams):
            stream = uuid.uuid4()
            for version in range(1, versions + 1):
                body = msgspec.json.encode({"amount": self.rng.randint(1, 500), "n": version})
                events.append(
                    StoredEvent(
                        originator_id=stream,
                        originator_version=version,
                        topic=self.rng.choice(TOPICS),
                        state=body,
                    )
                )
        self.positions.extend(await self.store.append(events))

    async def append(self, chunks: int, *, writers: int = 4, pause: float = 0.0) -> None:
        """``chunks`` appends of 100 events, ``writers`` at a time."""

        async def one_writer(count: int) -> None:
            for _ in range(count):
                await self.append_chunk()
                await asyncio.sleep(pause)

        share = [chunks // writers + (i < chunks % writers) for i in range(writers)]
        await asyncio.gather(*(one_writer(n) for n in share))

    async def until(self, stop: asyncio.Event, *, pause: float) -> None:
        while not stop.is_set():
            await self.append_chunk(streams=2)
            await asyncio.sleep(pause)


@contextlib.asynccontextmanager
async def running(work: Awaitable[None]) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.ensure_future(work)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def stream_state(nats_server: NatsServer, stream: str = STREAM) -> tuple[int, int]:
    """(messages, last relayed position) of the stream; (0, 0) while it is missing or away."""
    try:
        async with connected(nats_server.url) as nc:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            if not info.state.messages:
                return 0, 0
            last = await js.get_msg(stream, info.state.last_seq)
            return info.state.messages, int((last.headers or {})[MSG_ID_HEADER])
    except (TimeoutError, nats.errors.Error, OSError):
        return 0, 0


async def read_stream(
    nats_server: NatsServer, stream: str = STREAM, prefix: str = PREFIX
) -> list[tuple[str, dict[str, str], bytes]]:
    """Every message of the stream as a consumer gets it: (subject, headers, body), in order."""
    async with connected(nats_server.url) as nc:
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        consumer = await js.pull_subscribe(
            f"{prefix}.>",
            stream=stream,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )
        found: list[tuple[str, dict[str, str], bytes]] = []
        while len(found) < total:
            batch = await consumer.fetch(batch=1000, timeout=10)
            found.extend((m.subject, dict(m.headers or {}), m.data) for m in batch)
        with contextlib.suppress(nats.errors.TimeoutError):
            found.extend((m.subject, {}, m.data) for m in await consumer.fetch(1, timeout=0.5))
        await consumer.unsubscribe()
        return found


async def committed_position(database: IsolatedDatabase) -> int:
    value = await database.pool.fetchval(
        "SELECT position FROM projection_positions WHERE name = 'relay:nats'"
    )
    return int(value or 0)


async def every_event(store: EventStore) -> list[RecordedEvent]:
    """Every event committed before now (a loop until an empty read stopped at the first
    look whose watermark stood low: see ``recorded_since``)."""
    return await recorded_since(store, 0)


def assert_each_event_once_in_order(
    messages: list[tuple[str, dict[str, str], bytes]],
    events: list[RecordedEvent],
    prefix: str = PREFIX,
) -> None:
    """The stream is the store: same events, same order, nothing missing, nothing twice."""
    positions = [int(headers[MSG_ID_HEADER]) for _, headers, _ in messages]
    expected = [e.notification_id for e in events]
    assert len(positions) == len(set(positions)), "a position was delivered twice"
    assert sorted(set(expected) - set(positions))[:10] == [], "positions missing"
    assert positions == expected
    for (subject, _, body), event in zip(messages, events, strict=True):
        relayed = decode(body)
        assert relayed.position == event.notification_id
        assert relayed.stream_id == event.originator_id
        assert relayed.version == event.originator_version
        assert relayed.type == event.topic.rsplit(":", 1)[1]
        assert subject == f"{prefix}.{relayed.type}"
        assert relayed.recorded_at == event.recorded_at
        assert msgspec.json.decode(relayed.data) == msgspec.json.decode(event.state)
        assert relayed.hash == event.hash.hex()


async def test_every_event_reaches_the_stream_once_in_order_across_two_kills(
    isolated_db: IsolatedDatabase, nats_server: NatsServer, relay_folder: Path
) -> None:
    await nats_server.start()
    writer = Writer(isolated_db.store)
    # Two kill points somewhere in the run, as a crash would pick them.
    kill_points = sorted(random.Random(20261).sample(range(1_000, 9_000), 2))

    with relay_process(isolated_db, nats_server, relay_folder, "--batch-size", "100") as relay:
        relay.start()
        async with running(writer.append(100, pause=0.02)) as appending:
            for point in kill_points:

                async def reached(point: int = point) -> bool:
                    return (await stream_state(nats_server))[0] >= point

                await until(
                    reached,
                    WAIT_SECONDS,
                    what=f"the stream reaching {point} messages",
                    explain=relay.log_text,
                )
                relay.kill()  # SIGKILL: no clean-up, maybe between the acks and the commit
                relay.start()
            await appending
        assert len(writer.positions) == 10_000

        head = max(writer.positions)

        async def caught_up() -> bool:
            return (await stream_state(nats_server))[1] == head and (
                await committed_position(isolated_db)
            ) == head

        await until(
            caught_up,
            WAIT_SECONDS,
            what=f"the relay publishing up to {head}",
            explain=relay.log_text,
        )
        assert await relay.stop() == 0, relay.log_text()

    events = await every_event(isolated_db.store)
    assert sorted(writer.positions) == [e.notification_id for e in events]
    assert_each_event_once_in_order(await read_stream(nats_server), events)


async def test_a_broker_outage_holds_the_relay_back_and_loses_nothing(
    isolated_db: IsolatedDatabase, nats_server: NatsServer, relay_folder: Path
) -> None:
    await nats_server.start()
    writer = Writer(isolated_db.store)
    done_writing = asyncio.Event()

    with relay_process(isolated_db, nats_server, relay_folder) as relay:
        relay.start()
        async with running(writer.until(done_writing, pause=0.01)) as appending:

            async def published_some() -> bool:
                return (await stream_state(nats_server))[0] >= 500

            await until(
                published_some, WAIT_SECONDS, what="the relay publishing", explain=relay.log_text
            )

            await nats_server.stop()
            written_at_stop = len(writer.positions)

            async def held_back() -> bool:
                return (
                    len(writer.positions) >= written_at_stop + 1_000
                    and "NATS at" in relay.log_text()
                    and "unavailable" in relay.log_text()
                )

            await until(
                held_back,
                WAIT_SECONDS,
                what="events appended during the outage",
                explain=relay.log_text,
            )
            assert relay.running(), relay.log_text()

            await nats_server.start()
            written_at_start = len(writer.positions)

            async def written_more() -> bool:
                return len(writer.positions) >= written_at_start + 500

            await until(written_more, WAIT_SECONDS, what="events appended after the outage")
            done_writing.set()
            await appending

        head = max(writer.positions)

        async def caught_up() -> bool:
            return (await stream_state(nats_server))[1] == head and (
                await committed_position(isolated_db)
            ) == head

        await until(
            caught_up,
            WAIT_SECONDS,
            what=f"the relay publishing up to {head}",
            explain=relay.log_text,
        )
        assert relay.running(), "the relay recovered by itself, without a restart"
        assert "recovered" in relay.log_text()
        assert await relay.stop() == 0, relay.log_text()

    events = await every_event(isolated_db.store)
    assert sorted(writer.positions) == [e.notification_id for e in events]
    assert_each_event_once_in_order(await read_stream(nats_server), events)


async def test_sigterm_stops_the_relay_after_the_batch_in_flight(
    isolated_db: IsolatedDatabase, nats_server: NatsServer, relay_folder: Path
) -> None:
    await nats_server.start()
    writer = Writer(isolated_db.store)
    done_writing = asyncio.Event()

    with relay_process(isolated_db, nats_server, relay_folder, "--batch-size", "50") as relay:
        relay.start()
        async with running(writer.until(done_writing, pause=0.005)):

            async def publishing() -> bool:
                return (await stream_state(nats_server))[0] >= 1_000

            await until(
                publishing, WAIT_SECONDS, what="the relay publishing", explain=relay.log_text
            )
            assert await relay.stop() == 0, relay.log_text()
            done_writing.set()

    # What it published, it committed: a restart goes on from the stream's last event.
    assert await committed_position(isolated_db) == (await stream_state(nats_server))[1]
    assert "relay stopped at position" in relay.log_text()


async def test_a_batch_published_again_is_stored_once_and_a_gap_is_refused(
    isolated_db: IsolatedDatabase, nats_server: NatsServer
) -> None:
    await nats_server.start()
    writer = Writer(isolated_db.store)
    await writer.append_chunk(streams=3)
    events = await every_event(isolated_db.store)
    messages = [outgoing(e, PREFIX) for e in events]
    publisher = JetStreamPublisher(nats_server.url, StreamSettings())
    await publisher.connect()
    try:
        last_seq = await publisher.publish(messages, after_seq=0)
        # As after a lost ack or a crash before the commit: the same batch once more.
        assert await publisher.publish(messages, after_seq=0) == last_seq
        assert (await stream_state(nats_server)) == (len(events), events[-1].notification_id)

        # A batch that does not follow the stream's last message is refused whole.
        await writer.append_chunk(streams=1)
        more = [outgoing(e, PREFIX) for e in (await every_event(isolated_db.store))[len(events) :]]
        with pytest.raises(BrokerUnavailable, match="wrong last sequence"):
            await publisher.publish(more, after_seq=last_seq - 1)
        assert (await stream_state(nats_server))[0] == len(events)
    finally:
        await publisher.close()
    assert_each_event_once_in_order(await read_stream(nats_server), events)


async def test_the_relay_refuses_a_stream_that_holds_another_ledgers_events(
    isolated_db: IsolatedDatabase, nats_server: NatsServer
) -> None:
    await nats_server.start()
    await Writer(isolated_db.store).append_chunk(streams=1)
    other = (await every_event(isolated_db.store))[3]
    stranger = msgspec.json.encode({"position": other.notification_id, "hash": "00" * 32})
    async with connected(nats_server.url) as nc:
        js = nc.jetstream()
        await js.add_stream(name=STREAM, subjects=[f"{PREFIX}.>"])
        await js.publish(
            f"{PREFIX}.CreditsSpent",
            stranger,
            headers={MSG_ID_HEADER: str(other.notification_id)},
        )

    relay = Relay(
        isolated_db.store, isolated_db.pool, isolated_db.url, relay_settings(url=nats_server.url)
    )
    with pytest.raises(RelayRefused, match="another ledger"):
        await asyncio.wait_for(relay.run(asyncio.Event()), WAIT_SECONDS)
    assert await committed_position(isolated_db) == 0


async def test_a_relay_starting_while_the_watermark_stands_below_the_streams_end_goes_on(
    isolated_db: IsolatedDatabase, nats_server: NatsServer
) -> None:
    """The relay looked for the stream's last event behind the watermark, which a look can
    find below an event an earlier look passed (a transaction of another database that
    ends between its snapshot and its read of the sessions counts there): it found nothing
    at that position, refused its own stream as another ledger's and stopped. Played here
    by a transaction of this database begun before the events, left open."""
    await nats_server.start()
    older = await isolated_db.pool.acquire()
    transaction = older.transaction()
    await transaction.start()
    try:
        await older.fetchval("SELECT pg_current_xact_id()")  # a writer: it has an id
        writer = Writer(isolated_db.store)
        await writer.append_chunk(streams=1)
        events = [await isolated_db.store.event_at(p) for p in sorted(writer.positions)]
        publisher = JetStreamPublisher(nats_server.url, StreamSettings())
        await publisher.connect()
        try:  # as a relay published them, at a look whose watermark had passed them
            await publisher.publish([outgoing(e, PREFIX) for e in events if e], after_seq=0)
        finally:
            await publisher.close()
        head = max(writer.positions)
        relay = Relay(
            isolated_db.store,
            isolated_db.pool,
            isolated_db.url,
            relay_settings(url=nats_server.url),
        )
        stop = asyncio.Event()
        relaying = asyncio.ensure_future(relay.run(stop))
        try:

            async def went_on_from_the_streams_end() -> bool:
                if relaying.done():
                    relaying.result()  # what ended it, raised
                return await committed_position(isolated_db) == head

            await until(went_on_from_the_streams_end, WAIT_SECONDS, what="the relay going on")
        finally:
            stop.set()
            await asyncio.wait_for(relaying, WAIT_SECONDS)
    finally:
        await transaction.rollback()
        await isolated_db.pool.release(older)

    assert (await stream_state(nats_server))[1] == head


async def test_the_relay_refuses_subjects_another_stream_holds_instead_of_retrying(
    isolated_db: IsolatedDatabase, nats_server: NatsServer
) -> None:
    """JetStream will not make a stream whose subjects overlap another's (error 10065):
    the relay said so once a retry, for ever (a relay review)."""
    await nats_server.start()
    async with connected(nats_server.url) as nc:
        await nc.jetstream().add_stream(name="SOMEONE_ELSES", subjects=[f"{PREFIX}.>"])

    relay = Relay(
        isolated_db.store,
        isolated_db.pool,
        isolated_db.url,
        relay_settings(url=nats_server.url, stream="SECOND"),
    )
    with pytest.raises(RelayRefused, match=r"cannot create stream SECOND .*10065"):
        await asyncio.wait_for(relay.run(asyncio.Event()), WAIT_SECONDS)
    assert await committed_position(isolated_db) == 0


async def test_relays_refused_at_their_start_leave_no_position_row_and_one_that_runs_one(
    isolated_db: IsolatedDatabase, nats_server: NatsServer
) -> None:
    """Each relay made its row before it reached the broker: one refused for good (a stream
    holding another ledger's events, subjects another stream holds: "use another --stream")
    left a row at 0 no relay would move, one per stream tried, each behind by the whole
    store in /metrics for ever (its "Event feed behind" alert never resolving)."""
    await nats_server.start()
    await Writer(isolated_db.store).append_chunk(streams=1)
    other = (await every_event(isolated_db.store))[3]
    stranger = msgspec.json.encode({"position": other.notification_id, "hash": "00" * 32})
    async with connected(nats_server.url) as nc:
        js = nc.jetstream()
        await js.add_stream(name="SOMEONE_ELSES", subjects=[f"{PREFIX}.>"])
        await js.publish(
            f"{PREFIX}.CreditsSpent",
            stranger,
            headers={MSG_ID_HEADER: str(other.notification_id)},
        )

    async def relay_rows() -> list[tuple[str, int]]:
        rows = await isolated_db.pool.fetch(
            "SELECT name, position FROM projection_positions WHERE name LIKE 'relay:%'"
        )
        return [(r["name"], r["position"]) for r in rows]

    for stream, refusal in (("SOMEONE_ELSES", "another ledger"), ("SECOND", "10065")):
        settings = relay_settings(url=nats_server.url, stream=stream)
        relay = Relay(isolated_db.store, isolated_db.pool, isolated_db.url, settings)
        with pytest.raises(RelayRefused, match=refusal):
            await asyncio.wait_for(relay.run(asyncio.Event()), WAIT_SECONDS)
        assert await relay_rows() == [], stream

    settings = relay_settings(url=nats_server.url, stream="OURS", subject_prefix="ours")
    relay = Relay(isolated_db.store, isolated_db.pool, isolated_db.url, settings)
    stop = asyncio.Event()
    head = max(e.notification_id for e in await every_event(isolated_db.store))
    async with running(relay.run(stop)) as task:
        await until(lambda: relay.position == head, WAIT_SECONDS, what="the relay publishing")
        stop.set()
        await task
    assert await relay_rows() == [("relay:nats:OURS", head)]


async def test_two_relays_on_one_database_take_turns_without_duplicates(
    isolated_db: IsolatedDatabase, nats_server: NatsServer
) -> None:
    await nats_server.start()
    writer = Writer(isolated_db.store)
    stop = asyncio.Event()
    relays = [
        Relay(
            isolated_db.store,
            isolated_db.pool,
            isolated_db.url,
            relay_settings(url=nats_server.url, batch_size=50),
        )
        for _ in range(2)
    ]
    async with running(asyncio.gather(*(relay.run(stop) for relay in relays))) as both:
        await writer.append(20, writers=2, pause=0.01)
        head = max(writer.positions)

        async def caught_up() -> bool:
            return (await stream_state(nats_server))[1] == head

        await until(caught_up, WAIT_SECONDS, what=f"the relays publishing up to {head}")
        stop.set()
        await both

    assert await committed_position(isolated_db) == head
    events = await every_event(isolated_db.store)
    # Each batch was published by one of them only, not left to JetStream to drop.
    assert sum(relay.published for relay in relays) == len(events)
    assert_each_event_once_in_order(await read_stream(nats_server), events)


async def test_relays_to_two_streams_each_publish_every_event_once(
    isolated_db: IsolatedDatabase, nats_server: NatsServer
) -> None:
    """They kept their positions in one row: each found the other's position past its
    stream's end, took its stream for purged and skipped ahead (a projector review: 983
    and 24,935 positions missing)."""
    await nats_server.start()
    writer = Writer(isolated_db.store)
    stop = asyncio.Event()
    settings = [
        relay_settings(url=nats_server.url, batch_size=50),
        relay_settings(
            url=nats_server.url, stream="LEDGER_COPY", subject_prefix="copy", batch_size=50
        ),
    ]
    relays = [Relay(isolated_db.store, isolated_db.pool, isolated_db.url, s) for s in settings]
    await writer.append(10, writers=2)
    async with running(relays[0].run(stop)) as first:
        await writer.append(5, writers=2, pause=0.01)
        async with running(relays[1].run(stop)) as second:  # starts from its stream's start
            await writer.append(10, writers=2, pause=0.01)
            head = max(writer.positions)

            async def both_caught_up() -> bool:
                tails = [(await stream_state(nats_server, s.stream.name))[1] for s in settings]
                return tails == [head, head]

            await until(both_caught_up, WAIT_SECONDS, what=f"both streams up to {head}")
            stop.set()
            await asyncio.gather(first, second)

    events = await every_event(isolated_db.store)
    assert_each_event_once_in_order(await read_stream(nats_server), events)
    assert_each_event_once_in_order(
        await read_stream(nats_server, "LEDGER_COPY", "copy"), events, "copy"
    )
    positions = await isolated_db.pool.fetch(
        "SELECT name, position FROM projection_positions WHERE name LIKE 'relay:%' ORDER BY name"
    )
    assert [tuple(r) for r in positions] == [("relay:nats", head), ("relay:nats:LEDGER_COPY", head)]


async def test_events_published_again_into_a_purged_stream_are_stored_not_taken_as_duplicates(
    isolated_db: IsolatedDatabase, nats_server: NatsServer
) -> None:
    """docs/relay.md's way to publish again after a purge: JetStream kept the purged ids in
    its duplicate window and acknowledged them as duplicates; the relay committed them and
    the stream stayed empty (a relay review)."""
    await nats_server.start()
    await Writer(isolated_db.store).append_chunk(streams=3)
    events = await every_event(isolated_db.store)
    settings = relay_settings(url=nats_server.url, batch_size=50, duplicate_window_seconds=2)

    async def relay_until(head: int) -> None:
        relay = Relay(isolated_db.store, isolated_db.pool, isolated_db.url, settings)
        stop = asyncio.Event()
        async with running(relay.run(stop)) as task:

            async def committed() -> bool:
                return await committed_position(isolated_db) == head

            await until(committed, WAIT_SECONDS, what=f"the relay committing {head}")
            stop.set()
            await task

    head = events[-1].notification_id
    await relay_until(head)
    async with connected(nats_server.url) as nc:
        await nc.jetstream().purge_stream(STREAM)
    # As docs/relay.md says, by the administrator: only the relay's functions and the
    # tables' owner may move a relay's position (row security, migration 0030).
    admin = await asyncpg.connect(isolated_db.url)
    try:
        await admin.execute(
            "UPDATE projection_positions SET position = 0 WHERE name = 'relay:nats'"
        )
    finally:
        await admin.close()
    await relay_until(head)
    assert_each_event_once_in_order(await read_stream(nats_server), events)


class _StalledStore(EventStore):
    """A database that stops answering without an error, as behind a network partition."""

    async def read_all(
        self, after: int = 0, limit: int = 1000, connection: Connection | None = None
    ) -> list[RecordedEvent]:
        assert connection is not None
        await connection.execute("SELECT pg_sleep(3600)")
        raise AssertionError("unreachable")


async def test_a_database_that_stops_answering_is_one_line_and_sigterm_still_stops_the_relay(
    isolated_db: IsolatedDatabase,
    nats_server: NatsServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A paused database connection held the relay in its batch for good: no log line, and
    SIGTERM waited for a batch that never ended (a relay review)."""
    await nats_server.start()
    monkeypatch.setattr("relay.runner.STALL_SECONDS", 0.5, raising=False)
    settings = msgspec.structs.replace(relay_settings(url=nats_server.url), ack_timeout=0.5)
    relay = Relay(_StalledStore(isolated_db.pool), isolated_db.pool, isolated_db.url, settings)
    stop = asyncio.Event()
    async with running(relay.run(stop)) as task:

        async def said_so() -> bool:
            return "the event store is unavailable (TimeoutError: no answer" in caplog.text

        await until(said_so, 20, what="the relay saying the store does not answer")
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_broker_that_stays_down_is_said_once_not_at_every_retry(
    isolated_db: IsolatedDatabase,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each retry said it again at WARNING, every 5 s: an hour of NATS down was 720 lines;
    now once, then every 10 minutes (as the projector's and the dispatcher's troubles)."""
    monkeypatch.setattr("relay.runner.FIRST_RETRY_SECONDS", 0.01, raising=False)
    monkeypatch.setattr("relay.runner.LAST_RETRY_SECONDS", 0.02, raising=False)
    deaf = bind_free_port()  # bound, never listening: every connection refused
    relay = Relay(
        isolated_db.store,
        isolated_db.pool,
        isolated_db.url,
        relay_settings(url=f"nats://127.0.0.1:{deaf.getsockname()[1]}"),
    )
    stop = asyncio.Event()
    with deaf, caplog.at_level(logging.DEBUG, logger="relay.runner"):
        async with running(relay.run(stop)) as task:

            def tries() -> int:
                return sum("unavailable" in r.getMessage() for r in caplog.records)

            await until(lambda: tries() >= 6, 60, what="six tries of a broker that is down")
            stop.set()
            await asyncio.wait_for(task, 10)

    said = [
        r.getMessage()
        for r in caplog.records
        if "unavailable" in r.getMessage() and r.levelno >= logging.WARNING
    ]
    assert len(said) == 1, said
    assert said[0].endswith(
        "holding at position 0, retrying in 0.0s; said again every 10 minutes while it lasts"
    )


async def test_the_relay_listens_again_after_its_connection_is_cut_off(
    isolated_db: IsolatedDatabase, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay LISTENs for new events as the projector does, on a connection of its own; a
    PostgreSQL restart or a terminated backend closed it, and it never listened again (each
    event then waited for the next poll, 0.5 s, until the process restarted)."""
    monkeypatch.setattr(wakeups, "RELISTEN_SECONDS", 0.05, raising=False)
    await nats_server.start()
    listen = f'LISTEN "{NOTIFY_CHANNEL}"'
    admin = await asyncpg.connect(isolated_db.url)  # sees the relay's query (its role)

    async def listening() -> set[int]:
        rows = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = $1",
            listen,
        )
        return {row["pid"] for row in rows}

    stop = asyncio.Event()
    relay = Relay(
        isolated_db.store, isolated_db.pool, isolated_db.url, relay_settings(url=nats_server.url)
    )
    running = asyncio.create_task(relay.run(stop))
    try:
        await until(listening, WAIT_SECONDS, what="the relay's LISTEN")
        [first] = await listening()
        await admin.execute("SELECT pg_terminate_backend($1)", first)

        async def listens_again() -> bool:
            return bool((await listening()) - {first})

        await until(listens_again, WAIT_SECONDS, what="the relay's LISTEN after the kill")
    finally:
        stop.set()
        await running
        await admin.close()


async def test_a_tls_url_sends_no_credentials_to_a_server_without_tls(tmp_path: Path) -> None:
    """nats-py goes over TLS only when the server asks for it: to a server (or a man in
    the middle) that did not, a tls:// relay sent its user and password in plain text and
    published (a relay review)."""
    with nats_server_with(tmp_path / "nats", "--user", "relay", "--pass", "s3cret") as server:
        server.url = f"nats://relay:s3cret@127.0.0.1:{server.port}"
        await server.start()
        url = f"tls://relay:s3cret@127.0.0.1:{server.port}"
        publisher = JetStreamPublisher(url, StreamSettings())
        try:
            with pytest.raises(BrokerUnavailable, match="does not offer TLS"):
                await publisher.connect()
        finally:
            await publisher.close()
        async with connected(server.url) as nc:
            with pytest.raises(nats.js.errors.NotFoundError):
                await nc.jetstream().stream_info(STREAM)


async def test_a_tls_url_publishes_over_tls_to_a_server_with_a_trusted_certificate(
    isolated_db: IsolatedDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, certificate, key = certificate_for_localhost(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # read by ssl.create_default_context()
    tls = ("--tls", "--tlscert", str(certificate), "--tlskey", str(key))
    with nats_server_with(tmp_path / "nats", *tls) as server:
        server.url = f"tls://localhost:{server.port}"
        await server.start()
        await Writer(isolated_db.store).append_chunk(streams=1)
        events = await every_event(isolated_db.store)
        publisher = JetStreamPublisher(server.url, StreamSettings())
        try:
            await publisher.connect()
            await publisher.publish([outgoing(e, PREFIX) for e in events], after_seq=0)
        finally:
            await publisher.close()
        assert_each_event_once_in_order(await read_stream(server), events)


async def test_a_tls_url_trusts_the_ca_file_it_is_given_in_place_of_the_systems(
    isolated_db: IsolatedDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker with a certificate of a private CA (docker-compose.yml's NATS), trusted
    through --tls-ca (LEDGER_RELAY_TLS_CA) and not through the system's store."""
    ca, certificate, key = certificate_for_localhost(tmp_path)
    tls = ("--tls", "--tlscert", str(certificate), "--tlskey", str(key))
    with nats_server_with(tmp_path / "nats", *tls) as server:
        server.url = f"tls://localhost:{server.port}"
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # for start(), which waits on a client
        await server.start()
        monkeypatch.delenv("SSL_CERT_FILE")
        await Writer(isolated_db.store).append_chunk(streams=1)
        events = await every_event(isolated_db.store)
        settings = relay_settings(url=server.url, tls_ca=str(ca))
        publisher = JetStreamPublisher(settings.url, settings.stream, tls_ca=settings.tls_ca)
        try:
            await publisher.connect()
            await publisher.publish([outgoing(e, PREFIX) for e in events], after_seq=0)
        finally:
            await publisher.close()
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # for read_stream()'s client
        assert_each_event_once_in_order(await read_stream(server), events)


async def test_a_broker_whose_certificate_is_not_trusted_is_unavailable_not_a_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the failed handshake nats-py's close() waited for good: the relay held at its
    connect, logging nothing, and never tried again (found with a private CA's broker)."""
    ca, certificate, key = certificate_for_localhost(tmp_path)
    tls = ("--tls", "--tlscert", str(certificate), "--tlskey", str(key))
    with nats_server_with(tmp_path / "nats", *tls) as server:
        server.url = f"tls://localhost:{server.port}"
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # for start(), which waits on a client
        await server.start()
        monkeypatch.delenv("SSL_CERT_FILE")
        untrusted = JetStreamPublisher(server.url, StreamSettings())
        try:
            with pytest.raises(BrokerUnavailable, match="certificate verify failed"):
                # A guard, not a measure: without the fix this waits for ever.
                await asyncio.wait_for(untrusted.connect(), WAIT_SECONDS)
        finally:
            await untrusted.close()


@pytest.mark.parametrize(
    ("url", "ca", "complaint"),
    [
        ("nats://127.0.0.1:4222", "ca.pem", "for a tls:// URL"),
        ("tls://127.0.0.1:4222", "missing.pem", "missing.pem cannot be read"),
        ("tls://127.0.0.1:4222", "not-a-certificate.pem", "cannot be read"),
    ],
)
def test_a_tls_ca_file_that_cannot_be_used_is_refused_before_connecting(
    tmp_path: Path, url: str, ca: str, complaint: str
) -> None:
    certificate_for_localhost(tmp_path)
    (tmp_path / "not-a-certificate.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match=complaint):
        relay_settings(url=url, tls_ca=str(tmp_path / ca))


async def test_metrics_show_a_relay_that_never_reached_its_broker_as_behind(
    isolated_db: IsolatedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """The relay's position row was made by its first commit: a relay that never reached
    its broker (a wrong URL, a broker down since it started) had none, and /metrics
    showed no relay at all, so no alert on its lag could fire (a relay review)."""
    writer = Writer(isolated_db.store)
    await writer.append_chunk(streams=1)
    closed = bind_free_port()
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there
    settings = relay_settings(url=f"nats://127.0.0.1:{port}", stream="NEVER_REACHED")
    relay = Relay(isolated_db.store, isolated_db.pool, isolated_db.url, settings)
    stop = asyncio.Event()
    async with running(relay.run(stop)) as task:

        async def held_back() -> bool:
            return "unavailable" in caplog.text

        await until(held_back, WAIT_SECONDS, what="the relay saying NATS is unavailable")
        stop.set()
        await task

    await refresh_gauges(isolated_db.pool)
    view = {"view": "relay:nats:NEVER_REACHED"}
    assert REGISTRY.get_sample_value("ledger_projection_position", view) == 0
    lag = REGISTRY.get_sample_value("ledger_projection_lag_positions", view)
    assert lag == max(writer.positions)
    assert REGISTRY.get_sample_value("ledger_projection_lag_seconds", view) is not None


async def test_a_url_naming_several_servers_publishes_through_the_one_that_answers(
    isolated_db: IsolatedDatabase, nats_server: NatsServer
) -> None:
    """docs/relay.md asks for a three-node cluster; the relay took nats://a:4222,b:4222 and
    then failed every connection with nats-py's "invalid connect url option", for ever
    (a relay review)."""
    await nats_server.start()
    writer = Writer(isolated_db.store)
    await writer.append_chunk(streams=2)
    closed = bind_free_port()
    down = closed.getsockname()[1]
    closed.close()  # a node of the cluster that is away
    url = f"nats://127.0.0.1:{down},127.0.0.1:{nats_server.port}"
    relay = Relay(isolated_db.store, isolated_db.pool, isolated_db.url, relay_settings(url=url))
    stop = asyncio.Event()
    async with running(relay.run(stop)) as task:
        head = max(writer.positions)

        async def caught_up() -> bool:
            return await committed_position(isolated_db) == head

        await until(caught_up, WAIT_SECONDS, what=f"the relay publishing up to {head}")
        stop.set()
        await task
    assert_each_event_once_in_order(
        await read_stream(nats_server), await every_event(isolated_db.store)
    )
    assert servers("tls://u:p%2F@a:1,b:2/x") == ["tls://u:p%2F@a:1/x", "tls://u:p%2F@b:2/x"]


async def relayed_everything(
    relay: RelayProcess, database: IsolatedDatabase, nats_server: NatsServer, head: int
) -> None:
    async def there() -> bool:
        return (await stream_state(nats_server))[1] == head and (
            await committed_position(database)
        ) == head

    await until(
        there, WAIT_SECONDS, what=f"the relay publishing up to {head}", explain=relay.log_text
    )


async def test_the_relay_connects_as_ledger_relay_not_as_the_service(
    isolated_db: IsolatedDatabase, nats_server: NatsServer, relay_folder: Path
) -> None:
    """Given a URL that may set the database up (development, the tests), the relay
    connects as ledger_relay, which reads the store and moves its own position only:
    ledger_service, which it took before, may append events and write the views."""
    await nats_server.start()
    writer = Writer(isolated_db.store)
    await writer.append(2)

    with relay_process(isolated_db, nats_server, relay_folder) as relay:
        relay.start()
        await relayed_everything(relay, isolated_db, nats_server, max(writer.positions))
        admin = await asyncpg.connect(isolated_db.url)
        try:
            relay_sessions = await admin.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND usename = $1""",
                RELAY_ROLE,
            )
        finally:
            await admin.close()
        assert relay_sessions > 0, relay.log_text()
        assert await relay.stop() == 0, relay.log_text()

    assert "never needs" not in relay.log_text()
    assert_each_event_once_in_order(
        await read_stream(nats_server), await every_event(isolated_db.store)
    )


async def test_a_relay_given_the_service_role_still_runs_and_says_to_give_it_its_own(
    isolated_db: IsolatedDatabase, nats_server: NatsServer, relay_folder: Path
) -> None:
    """A deployment whose relay has DATABASE_URL naming ledger_service (as compose's did)
    keeps publishing; the relay warns that the role may do what it never needs."""
    await nats_server.start()
    writer = Writer(isolated_db.store)
    await writer.append(1)
    relay = RelayProcess(as_role(isolated_db.url, SERVICE_ROLE), nats_server.url, relay_folder)
    try:
        relay.start()
        await relayed_everything(relay, isolated_db, nats_server, max(writer.positions))
        assert await relay.stop() == 0, relay.log_text()
    finally:
        if relay.running():
            relay.kill()

    assert f"relay: {SERVICE_ROLE} may append events and write " in relay.log_text(), (
        relay.log_text()
    )
    assert f"connect it as {RELAY_ROLE}" in relay.log_text()


async def test_a_broker_back_without_the_last_messages_it_acknowledged_gets_them_again(
    isolated_db: IsolatedDatabase, nats_server: NatsServer
) -> None:
    """A single nats-server whose machine dies can come back without the last messages it
    acknowledged (docs/relay.md, "Limits"): its stream then ends, with this ledger's event,
    before the relay's position. The relay warned and went on from its position, and the
    events in between were missing from the stream for good, a gap no consumer can see
    (positions have gaps anyway) (a review). It now publishes them again from the stream's
    end."""
    writer = Writer(isolated_db.store)
    settings = relay_settings(url=nats_server.url, batch_size=50)

    async def relay_until_all_in() -> None:
        head = (await every_event(isolated_db.store))[-1].notification_id
        relay = Relay(isolated_db.store, isolated_db.pool, isolated_db.url, settings)
        stop = asyncio.Event()
        async with running(relay.run(stop)) as task:

            async def all_in() -> bool:
                return (
                    await committed_position(isolated_db) == head
                    and (await stream_state(nats_server))[1] == head
                )

            await until(all_in, WAIT_SECONDS, what=f"the relay publishing up to {head}")
            stop.set()
            await task

    store = nats_server.folder / "jetstream"
    kept = nats_server.folder / "jetstream-as-it-was"
    await nats_server.start()
    await writer.append_chunk(streams=3)
    await relay_until_all_in()
    await nats_server.stop()
    shutil.copytree(store, kept)  # what its disk will hold after the crash
    await nats_server.start()
    await writer.append_chunk(streams=3)
    await relay_until_all_in()
    await nats_server.stop()
    shutil.rmtree(store)
    kept.rename(store)
    await nats_server.start()  # back, without the second chunk it acknowledged
    await writer.append_chunk(streams=3)
    await relay_until_all_in()

    assert_each_event_once_in_order(
        await read_stream(nats_server), await every_event(isolated_db.store)
    )
