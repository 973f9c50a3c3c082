"""Group commit, the aggregate cache and the token cache, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import asyncpg
import psycopg
import pytest
from eventsourcing.persistence import StoredEvent

from api.access.tokens import Scope, TokenService
from api.database import SERVICE_SETTINGS, create_pool
from ledger.commands import SpendCredits
from ledger.store import commit
from ledger.store.claims import Claim, ClaimTaken
from ledger.store.commit import ClaimRecord, GroupCommitter, Writes
from ledger.store.event_store import (
    NOTIFY_CHANNEL,
    ORDERING_LOCK,
    ConcurrencyConflict,
    EventStore,
)
from tests.conftest import Ledgers, unique
from tests.support.ledger import open_account, save
from tests.support.waiting import until


def unit(stream: uuid.UUID, version: int, key: str | None = None) -> Writes:
    event = StoredEvent(
        originator_id=stream, originator_version=version, topic="tests:Happened", state=b"{}"
    )
    claims = [ClaimRecord(Claim("tests", key, b"h"), b"{}")] if key is not None else []
    return Writes(events=[event], claims=claims)


def spend(account_id: str, amount: int, reason: str = "work") -> SpendCredits:
    return SpendCredits(
        account_id=account_id, amount=amount, reason=reason, idempotency_key=unique("key")
    )


async def test_concurrent_commands_share_batches_and_fail_alone(store: EventStore) -> None:
    committer = GroupCommitter(store.pool, writers=2)
    taken_key = unique("key")
    await committer.commit(unit(uuid.uuid4(), 1, taken_key))
    contested = uuid.uuid4()
    await committer.commit(unit(contested, 1))
    batches_before = committer.batches
    units = [unit(uuid.uuid4(), 1) for _ in range(200)]
    units[50] = unit(contested, 1)  # its version is taken
    units[120] = unit(uuid.uuid4(), 1, taken_key)  # its idempotency key is taken

    outcomes = await asyncio.gather(*(committer.commit(u) for u in units), return_exceptions=True)
    await committer.stop()

    assert isinstance(outcomes[50], ConcurrencyConflict)
    assert isinstance(outcomes[120], ClaimTaken)
    succeeded = [o for i, o in enumerate(outcomes) if i not in (50, 120)]
    assert all(isinstance(o, list) and len(o) == 1 for o in succeeded)
    assert committer.batches - batches_before < 200 / 4  # coalesced, not one by one
    for i, u in enumerate(units):
        stored = await store.load(u.events[0].originator_id)
        if i == 120:
            assert stored == []  # nothing of a command that failed
        else:
            assert len(stored) == 1


async def test_a_command_given_up_on_before_its_batch_began_is_not_written(
    store: EventStore,
    database_url: str,
) -> None:
    """A forced stop cuts the requests in flight off, answering 503 "please retry": nothing
    was recorded. One whose writes still waited for a writer was written all the same, as
    the committer finished its queue, after that answer (an account opened that a retry
    then found taken, 409)."""
    committer = GroupCommitter(store.pool, writers=1)
    # The administrator's: no login role may take an advisory lock (advisory_locks.sql).
    holder = await asyncpg.connect(database_url)
    try:
        # The one writer's batch waits for the ordering lock, so the next command queues.
        await holder.execute("SELECT pg_advisory_lock($1)", ORDERING_LOCK)
        writing = asyncio.ensure_future(committer.commit(unit(uuid.uuid4(), 1)))
        await asyncio.sleep(0.2)
        given_up_on = uuid.uuid4()
        queued = asyncio.ensure_future(committer.commit(unit(given_up_on, 1)))
        await asyncio.sleep(0.05)
        queued.cancel()
        await holder.execute("SELECT pg_advisory_unlock($1)", ORDERING_LOCK)
        assert len(await writing) == 1
    finally:
        await holder.close()
    await committer.stop()

    assert queued.cancelled()
    assert await store.load(given_up_on) == []


async def test_a_stale_cached_balance_never_refuses_a_spend_the_store_allows(
    store: EventStore,
    ledgers: Ledgers,
) -> None:
    here, there = ledgers(store.pool), ledgers(store.pool)
    account_id = unique("acct")
    await open_account(here, account_id, 100)
    await here.account(account_id)  # cached here with a balance of 100
    elsewhere = await there.account(account_id)
    elsewhere.purchase(session_id="cs_test_elsewhere", credits=500)
    await save(there, elsewhere)  # another process adds 500

    spent = await here.execute(spend(account_id, 550, "big job"))

    assert spent.balance == 50


async def test_a_stale_cached_version_makes_the_spend_retry_on_fresh_state(
    store: EventStore,
    ledgers: Ledgers,
) -> None:
    here, there = ledgers(store.pool), ledgers(store.pool)
    account_id = unique("acct")
    await open_account(here, account_id, 100)
    await here.account(account_id)
    await there.execute(spend(account_id, 30, "elsewhere"))

    spent = await here.execute(spend(account_id, 30, "here"))

    assert spent.balance == 40
    assert (await here.account(account_id, fresh=True)).version == 3


async def test_a_revocation_in_another_process_reaches_a_caching_service(
    pool: asyncpg.Pool, database_url: str
) -> None:
    caching, elsewhere = TokenService(pool), TokenService(pool)
    await caching.watch_revocations(database_url)
    try:
        issued = await elsewhere.issue(Scope.LEDGER_AUDIT, name="auditor")
        assert await caching.authenticate(issued.secret) is not None  # now cached
        assert await caching.authenticate(issued.secret + "x") is None

        await elsewhere.revoke(issued.token_id)

        deadline = time.monotonic() + 2
        while await caching.authenticate(issued.secret) is not None:
            assert time.monotonic() < deadline, "the revocation never arrived"
            await asyncio.sleep(0.005)
    finally:
        await caching.stop_watching()


async def test_the_revocation_listener_comes_back_after_its_connection_is_killed(
    pool: asyncpg.Pool, database_url: str
) -> None:
    caching, elsewhere = TokenService(pool), TokenService(pool)
    caching.RECONNECT_SECONDS = (0.05,)
    await caching.watch_revocations(database_url)
    try:
        listener = caching._listener
        assert listener is not None
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", listener.get_server_pid())
        finally:
            await admin.close()
        deadline = time.monotonic() + 5
        while caching._listener is None or caching._listener is listener:
            assert time.monotonic() < deadline, "the listener never came back"
            await asyncio.sleep(0.01)

        issued = await elsewhere.issue(Scope.LEDGER_AUDIT, name="auditor")
        assert await caching.authenticate(issued.secret) is not None  # cached again
        assert issued.token_id in caching._known
        await elsewhere.revoke(issued.token_id)
        while await caching.authenticate(issued.secret) is not None:
            assert time.monotonic() < deadline, "the revocation never arrived"
            await asyncio.sleep(0.005)
    finally:
        await caching.stop_watching()


@pytest.mark.parametrize("writers", [1, 4])
async def test_every_answered_spend_is_in_the_store_exactly_once(
    store: EventStore, writers: int, ledgers: Ledgers
) -> None:
    books = ledgers(store.pool)
    books.uow.committer = GroupCommitter(store.pool, writers=writers)
    account_ids = [unique("acct") for _ in range(10)]
    for account_id in account_ids:
        await open_account(books, account_id, 1000)

    await asyncio.gather(*(books.execute(spend(a, 1)) for _ in range(30) for a in account_ids))
    await books.uow.committer.stop()

    for account_id in account_ids:
        assert (await books.account(account_id, fresh=True)).balance == 970
        assert (await books.account(account_id, fresh=True)).version == 31


async def test_a_committer_never_stopped_gives_its_writers_connections_back(
    database_url: str,
) -> None:
    """Writers keep their connections between batches for a while only: a pool closes once
    every connection is back, also the pool of a committer nobody stopped."""
    pool = await create_pool(database_url, min_size=1, max_size=4)
    committer = GroupCommitter(pool, writers=2)
    await asyncio.gather(*(committer.commit(unit(uuid.uuid4(), 1)) for _ in range(10)))

    await asyncio.wait_for(pool.close(), 10)
    await committer.stop()  # only now: its tasks would stay pending for a later test's GC


async def test_stop_gives_the_writers_connections_back(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=4)
    try:
        committer = GroupCommitter(pool, writers=2)
        await asyncio.gather(*(committer.commit(unit(uuid.uuid4(), 1)) for _ in range(10)))
        await committer.stop()

        assert pool.get_idle_size() == pool.get_size()
    finally:
        await pool.close()


async def _end_sessions(database_url: str, application_name: str) -> int:
    """End every session of ``application_name``; return when the server let each go."""
    admin = await asyncpg.connect(database_url)
    try:
        ended: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid, 30000)) FROM pg_stat_activity"
            " WHERE application_name = $1",
            application_name,
        )
    finally:
        await admin.close()
    return ended


@dataclass(frozen=True)
class Kept:
    pool: asyncpg.Pool
    name: str  # the pool's sessions' application_name
    committer: GroupCommitter
    woken: asyncio.Queue[str]  # the committer's wake-ups, as a reader hears them


@contextlib.asynccontextmanager
async def kept_connections(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Kept]:
    """A committer of one writer on a pool of its own (no minimum size) that keeps its
    connections until stopped; one command committed and its wake-up heard, so that the
    writer and the wake-ups' task each keep a connection, the pool's only two."""
    monkeypatch.setattr(commit, "KEEP_IDLE", 3600.0)
    name = unique("writers")
    settings = {**SERVICE_SETTINGS, "application_name": name}
    pool = await create_pool(database_url, min_size=0, max_size=4, server_settings=settings)
    kept = Kept(pool, name, GroupCommitter(pool, writers=1), asyncio.Queue())
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: kept.woken.put_nowait(args[-1]))
    try:
        await kept.committer.commit(unit(uuid.uuid4(), 1))
        await asyncio.wait_for(kept.woken.get(), 30)
        assert pool.get_size() == 2
        yield kept
    finally:
        await kept.committer.stop()
        await pool.close()
        await listener.close()


async def test_a_writer_commits_on_another_connection_once_its_kept_one_was_ended(
    database_url: str, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ended the writer's kept connection while it was idle (an operator's
    pg_terminate_backend, a restart, a proxy), and asyncpg read that: the next batch goes on
    another connection (asyncpg hands an ended connection back to its pool itself, and
    the writer asking it whether it was closed failed the batch: 503)."""
    async with kept_connections(database_url, monkeypatch) as kept:
        assert await _end_sessions(database_url, kept.name) == 2
        await until(lambda: kept.pool.get_size() == 0, what="asyncpg reads both endings")

        written = unit(uuid.uuid4(), 1)
        assert len(await kept.committer.commit(written)) == 1
        assert len(await store.load(written.events[0].originator_id)) == 1


async def test_readers_are_woken_on_another_connection_once_the_kept_one_was_ended(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with kept_connections(database_url, monkeypatch) as kept:
        assert await _end_sessions(database_url, kept.name) == 2
        await until(lambda: kept.pool.get_size() == 0, what="asyncpg reads both endings")

        await kept.committer.commit(unit(uuid.uuid4(), 1))

        await asyncio.wait_for(kept.woken.get(), 30)  # not left to the next commit's


async def test_a_batch_sent_before_the_ending_was_read_fails_alone_and_records_nothing(
    database_url: str, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch is sent on a kept connection whose ending asyncpg has not read yet. From the
    client's side that ending cannot be told from one in the middle of the batch, which may
    come after the commit (the rows are sent before it, the answer to Sync after): the batch
    is not sent again, its commands are answered 503 (a retry with the same key replays or
    applies once), and the next batch goes on another connection."""
    async with kept_connections(database_url, monkeypatch) as kept:
        # Synchronous: the event loop, and asyncpg in it, reads nothing meanwhile.
        with psycopg.connect(database_url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid, 30000)) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (kept.name,),
            ).fetchone()
        assert ended == (2,)

        lost = unit(uuid.uuid4(), 1)
        with pytest.raises(asyncpg.PostgresConnectionError):
            await kept.committer.commit(lost)
        assert await store.load(lost.events[0].originator_id) == []

        written = unit(uuid.uuid4(), 1)
        assert len(await kept.committer.commit(written)) == 1
        assert len(await store.load(written.events[0].originator_id)) == 1


class AnswerCutter:
    """A loopback proxy to PostgreSQL that, the first time a client sends ``marker`` (a value
    of the statement it binds), drops that connection at the first answer the server sends:
    the statement ran, its transaction committed (the server sends nothing before Sync is
    done), and the client hears only that the connection went."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.cut = 0
        self.upstream: Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]

    def _marks(self) -> bool:
        """Whether the marker still marks a connection (only the first time it is sent)."""
        return not self.cut

    async def _passes_marked_answer(self) -> bool:
        """What becomes of an answer on the marked connection: dropped with it (False)."""
        self.cut += 1
        return False

    async def _relay(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        server, to_server = await self.upstream()
        marked = asyncio.Event()

        async def outward() -> None:
            with contextlib.suppress(OSError):
                while data := await client.read(65536):
                    if self.marker in data and self._marks():
                        marked.set()
                    to_server.write(data)
                    await to_server.drain()
            to_server.close()

        async def back() -> None:
            with contextlib.suppress(OSError):
                while data := await server.read(65536):
                    if marked.is_set() and not await self._passes_marked_answer():
                        break
                    to_client.write(data)
                    await to_client.drain()
            to_client.close()
            to_server.close()

        await asyncio.gather(outward(), back())

    @contextlib.asynccontextmanager
    async def url(self, database_url: str) -> AsyncIterator[str]:
        parts = urlsplit(database_url)
        query = parse_qs(parts.query)
        server_port = parts.port or 5432
        if (socket_dir := query.pop("host", [""])[0]).startswith("/"):  # embedded: a socket
            socket_path = f"{socket_dir}/.s.PGSQL.{server_port}"
            self.upstream = lambda: asyncio.open_unix_connection(socket_path)
        else:
            self.upstream = lambda: asyncio.open_connection("127.0.0.1", server_port)
        proxy = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = proxy.sockets[0].getsockname()[1]
        credentials = parts.netloc.rpartition("@")[0]
        proxied = parts._replace(
            netloc=f"{credentials}@127.0.0.1:{port}", query=urlencode(query, doseq=True)
        )
        try:
            yield urlunsplit(proxied)
        finally:
            proxy.close()


class AnswerHolder(AnswerCutter):
    """As ``AnswerCutter``, but the server's answers on the connection that sent ``marker``
    are held back (from that one on) until ``release`` is set, then passed on."""

    def __init__(self, marker: bytes) -> None:
        super().__init__(marker)
        self.held = asyncio.Event()  # an answer is held
        self.release = asyncio.Event()

    def _marks(self) -> bool:
        return not self.held.is_set()

    async def _passes_marked_answer(self) -> bool:
        self.held.set()
        await self.release.wait()
        return True


@pytest.mark.usefixtures("store")
async def test_a_commit_while_the_notify_is_in_flight_is_followed_by_another(
    database_url: str,
) -> None:
    """The NOTIFY after the first commit reached the server and woke the readers, but its
    answer is not back: a second commit lands meanwhile, which those readers may have
    missed. Another NOTIFY follows it (the committer does not count the one in flight as
    this commit's)."""
    holder = AnswerHolder(f"NOTIFY {NOTIFY_CHANNEL}".encode())
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: heard.put_nowait(args[-1]))
    async with holder.url(database_url) as url:
        pool = await create_pool(url, min_size=0, max_size=4, set_up_first=False)
        committer = GroupCommitter(pool, writers=2)
        try:
            await committer.commit(unit(uuid.uuid4(), 1))
            await asyncio.wait_for(heard.get(), 30)  # the server ran the first NOTIFY
            await asyncio.wait_for(holder.held.wait(), 30)  # its answer is held

            await committer.commit(unit(uuid.uuid4(), 1))
            holder.release.set()

            await asyncio.wait_for(heard.get(), 30)
        finally:
            holder.release.set()
            await committer.stop()
            await pool.close()
            await listener.close()


async def test_a_keyed_spend_whose_commit_answer_was_lost_is_recorded_once(
    store: EventStore, database_url: str, ledgers: Ledgers
) -> None:
    """The ambiguous case: the batch committed, the connection went before its answer came.
    The committer does not send it again (nor could it tell its own commit from another's);
    the command fails (503), and the client's retry with the same key replays the first
    answer: one spend recorded."""
    books = ledgers(store.pool)
    account_id = unique("acct")
    await open_account(books, account_id, 100)
    command = spend(account_id, 25)
    cutter = AnswerCutter(command.idempotency_key.encode())
    async with cutter.url(database_url) as url:
        pool = await create_pool(url, min_size=0, max_size=2, set_up_first=False)
        await books.uow.committer.stop()  # the one that opened it: nothing stops it later
        books.uow.committer = GroupCommitter(pool, writers=1)
        try:
            with pytest.raises(asyncpg.PostgresConnectionError):
                await books.execute(command)
            assert cutter.cut == 1
            assert (await books.account(account_id, fresh=True)).version == 2  # committed

            again = await books.execute(command)  # as the client retries the 503
        finally:
            await books.uow.committer.stop()
            await pool.close()

    assert again.balance == 75
    account = await books.account(account_id, fresh=True)
    assert (account.balance, account.version) == (75, 2)
