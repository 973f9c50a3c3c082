"""Balances "as of" a moment never change after they are given."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import asyncpg
import pytest

from api.database import create_pool
from ledger.commands import SpendCredits
from ledger.service import Ledger
from ledger.store.commit import write_batch
from ledger.store.event_store import ORDERING_LOCK, EventStore, StoreBusy
from tests.conftest import IsolatedDatabase, unique
from tests.support.far_database import far_database
from tests.support.ledger import open_account


async def test_an_as_of_answer_waits_for_an_append_recorded_before_that_moment(
    ledger: Ledger, pool: asyncpg.Pool
) -> None:
    """An append whose time is taken before the moment asked for, but that commits after
    the question, is in the answer: the answer is the one it will always be."""
    account_id = unique("acct")
    account = await open_account(ledger, account_id, 1000)
    account.purchase(session_id="cs_slow", credits=250)

    slow = await pool.acquire()
    transaction = slow.transaction()
    await transaction.start()
    try:
        [outcome] = await write_batch(slow, [ledger.repository.writes([account], [])])
        outcome.result()  # recorded now, committed below
        asked = asyncio.ensure_future(ledger.account_as_of(account_id, datetime.now(UTC)))
        await asyncio.sleep(0.3)
        assert not asked.done(), "answered while an append recorded before it was open"
        await transaction.commit()
    finally:
        await pool.release(slow)
    then = await asked

    assert then.topup_balance == 250
    assert then.version == 2


async def test_an_as_of_answer_leaves_out_an_append_that_never_commits(
    ledger: Ledger, pool: asyncpg.Pool
) -> None:
    account_id = unique("acct")
    account = await open_account(ledger, account_id, 1000)
    account.purchase(session_id="cs_abandoned", credits=250)

    slow = await pool.acquire()
    transaction = slow.transaction()
    await transaction.start()
    try:
        await write_batch(slow, [ledger.repository.writes([account], [])])
        asked = asyncio.ensure_future(ledger.account_as_of(account_id, datetime.now(UTC)))
        await asyncio.sleep(0.1)
        await transaction.rollback()
    finally:
        await pool.release(slow)

    assert (await asked).topup_balance == 0


async def test_an_as_of_question_given_up_on_never_leaves_the_ordering_lock_held(
    isolated_db: IsolatedDatabase,
) -> None:
    """The lock was the session's, taken and let go around the question on a pooled
    connection: cancelled between the two, the connection went back to the pool holding
    it, and every append waited on it (a projector review: within a few tries)."""
    appender = await asyncpg.connect(isolated_db.url)  # takes the lock as appends do, often
    await appender.execute("SET lock_timeout = '3s'")  # a lock left held fails it, not hangs
    stop = asyncio.Event()

    async def append_often() -> None:
        while not stop.is_set():
            await appender.execute("SELECT pg_advisory_lock($1)", ORDERING_LOCK)
            await asyncio.sleep(random.uniform(0, 0.003))
            await appender.execute("SELECT pg_advisory_unlock($1)", ORDERING_LOCK)
            await asyncio.sleep(random.uniform(0, 0.001))

    appending = asyncio.ensure_future(append_often())
    try:
        for _ in range(150):
            asked = asyncio.ensure_future(
                isolated_db.store.wait_for_appends_before(datetime.now(UTC))
            )
            await asyncio.sleep(random.uniform(0, 0.004))
            asked.cancel()
            await asyncio.gather(asked, return_exceptions=True)
        stop.set()
        await appending
    finally:
        await appender.close()
    await asyncio.sleep(0.2)  # any shielded question finishes

    held = await isolated_db.pool.fetchval(
        """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1
           AND classid = 0 AND granted""",
        ORDERING_LOCK,
    )
    assert held == 0


_HELD_BETWEEN_STATEMENTS = """SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid)
    WHERE locktype = 'advisory' AND objid = $1 AND classid = 0 AND granted
      AND state = 'idle in transaction'"""
"""Sessions that hold the ordering lock while they wait for their client's next statement."""


async def test_an_as_of_question_holds_no_append_up_for_its_round_trips(
    isolated_db: IsolatedDatabase,
) -> None:
    """The ordering lock was taken in a transaction of three statements, and held from the
    first one's answer until the last one reached the server: over the round trips to the
    asking process, every append in the cluster waited (0.3 s a question, with answers 0.1 s
    late). Now one statement takes it and lets it go on the server: with answers 0.5 s late,
    no look at the server finds the lock held by a session waiting for its client."""
    watcher = await asyncpg.connect(isolated_db.url)
    try:
        # The look finds a lock held between statements (the check can fail).
        holder = await asyncpg.connect(isolated_db.url)
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1)", ORDERING_LOCK)
            held_by_the_control = await watcher.fetchval(_HELD_BETWEEN_STATEMENTS, ORDERING_LOCK)
        await holder.close()

        looks: list[int] = []
        async with far_database(isolated_db.url, answers_after=0.5) as far_url:
            far = await asyncpg.create_pool(far_url, min_size=1, max_size=1)
            try:
                asked = asyncio.ensure_future(
                    EventStore(far).wait_for_appends_before(datetime.now(UTC))
                )
                while not asked.done():
                    looks.append(await watcher.fetchval(_HELD_BETWEEN_STATEMENTS, ORDERING_LOCK))
                    await asyncio.sleep(0.005)
                await asked
            finally:
                await far.close()
    finally:
        await watcher.close()

    assert held_by_the_control == 1
    assert len(looks) > 20, looks  # the question's round trips were watched (0.5 s each)
    assert not any(looks), looks


async def test_an_as_of_moment_still_to_come_on_the_databases_clock_is_waited_for(
    ledger: Ledger, pool: asyncpg.Pool
) -> None:
    """The API's clock and the database's are apart (another host): a moment the API has
    passed, still ahead on the database, was answered at once, and a spend recorded before
    it afterwards changed the answer (an audit review). The database's clock decides."""
    account_id = unique("acct")
    await open_account(ledger, account_id, 1000)
    moment = await pool.fetchval("SELECT clock_timestamp() + interval '400 milliseconds'")

    first = asyncio.ensure_future(ledger.account_as_of(account_id, moment))
    await asyncio.sleep(0.05)
    await ledger.execute(
        SpendCredits(account_id=account_id, amount=25, reason="r", idempotency_key=unique("k"))
    )
    assert await pool.fetchval("SELECT clock_timestamp() < $1", moment)  # spent before it
    answered = (await first).allowance_remaining

    assert answered == (await ledger.account_as_of(account_id, moment)).allowance_remaining
    assert answered == 975


async def test_an_as_of_question_behind_a_long_transaction_holds_no_connection_between_looks(
    isolated_db: IsolatedDatabase,
) -> None:
    """A transaction left open in the database holds the watermark back, and a question
    waits (2 s, then StoreBusy). It held one pooled connection all that time, looking every
    2 ms: twenty questions took a whole pool. Each look now takes a connection
    for itself, less and less often."""
    forgotten = await asyncpg.connect(isolated_db.url)  # as an operator's open session
    transaction = forgotten.transaction()
    await transaction.start()
    await forgotten.fetchval("SELECT pg_current_xact_id()")  # a writing transaction's id
    one = await create_pool(isolated_db.url, min_size=1, max_size=1)
    try:
        asked = asyncio.ensure_future(EventStore(one).wait_for_appends_before(datetime.now(UTC)))
        await asyncio.sleep(0.3)  # waiting behind the open transaction
        assert not asked.done()
        assert await one.fetchval("SELECT 1") == 1  # the pool's only connection
        served_while_it_waited = not asked.done()  # held, it came free only as the wait ended
        with pytest.raises(StoreBusy):
            await asked
    finally:
        await transaction.rollback()
        await forgotten.close()
        await one.close()

    assert served_while_it_waited
