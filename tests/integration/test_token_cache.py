"""A revoked token stops working everywhere within the cache's lifetime, listener or not."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import asyncpg
from litestar.connection import ASGIConnection

from api.access.guards import allow, authenticated
from api.access.tokens import REVOCATIONS_CHANNEL, Scope, TokenService
from tests.conftest import unique


async def test_a_revocation_takes_effect_within_the_cache_lifetime_when_the_listener_is_deaf(
    pool: asyncpg.Pool, database_url: str
) -> None:
    now = [1000.0]  # a clock of the test's: a busy machine cannot outrun the lifetime
    caching = TokenService(pool, cache_seconds=0.5, clock=lambda: now[0])
    elsewhere = TokenService(pool)
    await caching.watch_revocations(database_url)
    try:
        issued = await elsewhere.issue(Scope.LEDGER_AUDIT, name="auditor")
        assert await caching.authenticate(issued.secret) is not None  # now cached
        # The listener's connection stays open and healthy-looking, and hears nothing:
        # as behind a pooler that drops notifications, or a NAT that forgot the connection.
        listener = caching._listener
        assert listener is not None
        await listener.execute(f"UNLISTEN {REVOCATIONS_CHANNEL}")

        await elsewhere.revoke(issued.token_id)
        await asyncio.sleep(0.1)  # time enough for a notification, were one heard
        still_cached = await caching.authenticate(issued.secret)
        now[0] += 0.6
        after_the_lifetime = await caching.authenticate(issued.secret)
    finally:
        await caching.stop_watching()

    assert still_cached is not None  # the notification never came: the listener is deaf
    assert after_the_lifetime is None  # read from the table again, and refused


async def test_a_cached_token_is_read_again_after_its_lifetime_without_a_revocation(
    pool: asyncpg.Pool, database_url: str
) -> None:
    now = [1000.0]
    caching = TokenService(pool, clock=lambda: now[0])
    issued = await caching.issue(Scope.LEDGER_WRITE, name="clocked")
    await caching.watch_revocations(database_url)
    try:
        assert caching.cache_seconds == 30  # the default
        assert await caching.authenticate(issued.secret) is not None
        # The row goes away behind the cache's back (no NOTIFY): a cached answer until 30 s.
        await pool.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE token_id = $1", issued.token_id
        )
        now[0] += 29.9
        within = await caching.authenticate(issued.secret)
        now[0] += 0.2
        beyond = await caching.authenticate(issued.secret)
    finally:
        await caching.stop_watching()

    assert within is not None
    assert beyond is None


async def test_a_token_read_while_no_one_listened_is_not_cached_once_the_listener_is_back(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """A check that began while the listener was lost could read the row before a
    revocation no one heard, end after the listener came back, and keep the revoked token
    for the cache's 30 s (a security review)."""
    one_connection = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    caching = TokenService(one_connection)
    issued = await caching.issue(Scope.LEDGER_WRITE, name="while deaf")
    await caching.watch_revocations(database_url)
    try:
        lost = caching._listener
        assert lost is not None
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", lost.get_server_pid())
        finally:
            await admin.close()
        deadline = time.monotonic() + 10
        while caching._listener is lost:
            assert time.monotonic() < deadline, "the lost listener was never noticed"
            await asyncio.sleep(0.01)
        async with one_connection.acquire():  # the check begins, and waits for its read
            checking = asyncio.create_task(caching.authenticate(issued.secret))
            await asyncio.sleep(0.05)
            while caching._listener is None:  # listening again, the read not yet made
                assert time.monotonic() < deadline, "the listener never came back"
                await asyncio.sleep(0.01)
        assert await checking is not None
        # What the lost listener would have missed: the revocation's notification.
        await pool.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE token_id = $1", issued.token_id
        )
        after = await caching.authenticate(issued.secret)
    finally:
        await caching.stop_watching()
        await one_connection.close()

    assert after is None


async def test_the_memories_of_tokens_keep_those_used_lately_not_every_one_ever_used(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """Each token checked stayed cached, and its last written use remembered, until the
    process ended: the entry of a customer's token used once was kept for good (45 MB a
    hundred thousand customers). A new entry now drops those whose time is up."""
    now = [1000.0]
    caching = TokenService(pool, clock=lambda: now[0])
    once = [await caching.issue(Scope.CREDITS, account_id=unique("acct")) for _ in range(30)]
    later = await caching.issue(Scope.LEDGER_WRITE, name="later")
    await caching.watch_revocations(database_url)
    try:
        for issued in once:
            assert await caching.authenticate(issued.secret) is not None
        assert len(caching._known) == len(caching._use_noted) == 30
        now[0] += 61  # past the cache's 30 s and the minute between writes of a use
        assert await caching.authenticate(later.secret) is not None
        known, noted = set(caching._known), set(caching._use_noted)
        again = await caching.authenticate(once[0].secret)  # read again, cached again
    finally:
        await caching.stop_watching()

    assert known == noted == {later.token_id}
    assert again is not None


async def test_a_cached_tokens_id_with_another_secret_is_refused_with_or_without_waiting(
    pool: asyncpg.Pool, database_url: str
) -> None:
    now = [1000.0]
    caching = TokenService(pool, cache_seconds=0.5, clock=lambda: now[0])
    await caching.watch_revocations(database_url)
    try:
        issued = await caching.issue(Scope.LEDGER_WRITE, name="writer")
        assert caching.remembered(issued.secret) is None  # not read yet
        principal = await caching.authenticate(issued.secret)  # now cached
        forged = issued.secret[:-4] + ("aaaa" if not issued.secret.endswith("aaaa") else "bbbb")
        remembered = caching.remembered(issued.secret)
        refused_now = caching.remembered(forged)
        refused = await caching.authenticate(forged)
        now[0] += 0.6
        stale = caching.remembered(issued.secret)
        read_again = await caching.authenticate(issued.secret)
    finally:
        await caching.stop_watching()

    assert principal is not None
    assert remembered == principal
    assert refused_now is None
    assert refused is None
    assert stale is None  # past its lifetime: authenticate reads the table
    assert read_again == principal


class _CountedHeaders(list[tuple[bytes, bytes]]):
    """A request's headers that count how often they are read through."""

    reads = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().__iter__()


async def test_a_guard_reads_a_token_the_cache_does_not_hold_from_the_headers_once(
    pool: asyncpg.Pool,
) -> None:
    """Asked first whether the cache holds it, then looked up: one read of ``Authorization``
    for both (api/access/guards.py ``_caller``)."""
    tokens = TokenService(pool)
    issued = await tokens.issue(Scope.LEDGER_WRITE, name=unique("guarded"))
    headers = _CountedHeaders([(b"authorization", f"Bearer {issued.secret}".encode())])
    app = SimpleNamespace(state={"services": SimpleNamespace(tokens=tokens)})
    scope = {"type": "http", "method": "POST", "headers": headers, "litestar_app": app}
    connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope)  # type: ignore[arg-type]

    await allow(Scope.LEDGER_WRITE)(connection, None)  # type: ignore[arg-type,misc]

    assert authenticated(connection.scope).token_id == issued.token_id
    assert headers.reads == 1
