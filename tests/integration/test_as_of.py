"""Balances "as of" a moment never change after they are given."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg

from ledger.service import Ledger
from ledger.store.commit import write_batch
from tests.conftest import unique
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
