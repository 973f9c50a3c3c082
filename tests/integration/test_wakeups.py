"""Readers are woken after commit by a NOTIFY that says how far the committer got
(ledger/store/commit.py), and the projector sleeps through news of what it applied."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from eventsourcing.persistence import StoredEvent

from ledger.store.commit import GroupCommitter, Writes
from ledger.store.event_store import NOTIFY_CHANNEL
from ledger.store.wakeups import listen
from projections.runner import Projector, catch_up
from tests.conftest import IsolatedDatabase
from tests.support.events import settled


def happened(stream: uuid.UUID, version: int) -> Writes:
    return Writes(
        events=[
            StoredEvent(
                originator_id=stream,
                originator_version=version,
                topic="tests:Happened",
                state=b"{}",
            )
        ]
    )


async def test_the_committers_notify_carries_the_highest_position_it_committed(
    isolated_db: IsolatedDatabase,
) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(isolated_db.url)
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: heard.put_nowait(args[3]))
    committer = GroupCommitter(isolated_db.pool)
    try:
        stream = uuid.uuid4()
        positions = [await committer.commit(happened(stream, v)) for v in (1, 2, 3)]
        payloads = [await asyncio.wait_for(heard.get(), timeout=5)]
        while payloads[-1] != str(positions[-1][-1]):
            payloads.append(await asyncio.wait_for(heard.get(), timeout=5))
    finally:
        await committer.stop()
        await listener.close()

    assert all(payload.isdigit() for payload in payloads)
    assert [int(p) for p in payloads] == sorted(int(p) for p in payloads)


async def test_a_listener_is_woken_only_by_the_payloads_it_wants(
    isolated_db: IsolatedDatabase,
) -> None:
    wake = asyncio.Event()
    listener = await listen(
        isolated_db.url,
        NOTIFY_CHANNEL,
        wake,
        who="test",
        poll_seconds=0.5,
        wakes=lambda payload: payload != "old news",
    )
    assert listener is not None
    try:
        await isolated_db.pool.execute("SELECT pg_notify($1, 'old news')", NOTIFY_CHANNEL)
        await isolated_db.pool.execute("SELECT pg_notify($1, 'news')", NOTIFY_CHANNEL)
        await asyncio.wait_for(wake.wait(), timeout=5)
        wake.clear()
        # Notifications arrive in the order they were sent, so once this one is in,
        # the one before it has been heard (and turned away) too.
        answered = asyncio.Event()
        await listener.add_listener(NOTIFY_CHANNEL, lambda *_: answered.set())
        await isolated_db.pool.execute("SELECT pg_notify($1, 'old news')", NOTIFY_CHANNEL)
        await asyncio.wait_for(answered.wait(), timeout=5)
    finally:
        await listener.close()

    assert not wake.is_set()


async def test_the_projector_is_not_woken_by_positions_it_has_applied(
    isolated_db: IsolatedDatabase,
) -> None:
    committer = GroupCommitter(isolated_db.pool)
    stream = uuid.uuid4()
    try:
        [first] = await committer.commit(happened(stream, 1))
        [second] = await committer.commit(happened(stream, 2))
    finally:
        await committer.stop()
    await settled(isolated_db.store)
    projector = Projector(isolated_db.store, isolated_db.url)

    assert projector.may_be_news(str(first))  # nothing applied yet
    await catch_up(isolated_db.store, projector.projections, progress=projector.progress)

    assert projector.progress.reached == second
    assert not projector.may_be_news(str(first))
    assert not projector.may_be_news(str(second))
    assert projector.may_be_news(str(second + 1))
    assert projector.may_be_news("")  # a NOTIFY that says nothing may announce anything
