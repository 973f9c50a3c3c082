"""Two processes' worth of writers on one account: optimistic concurrency decides."""

from __future__ import annotations

import asyncio

import asyncpg

from ledger.bootstrap import build_ledger
from ledger.commands import SpendCredits
from ledger.domain.errors import InsufficientCredits
from ledger.service import Ledger
from tests.conftest import unique
from tests.support.ledger import open_account


async def test_writers_without_a_shared_lock_never_overdraw(pool: asyncpg.Pool) -> None:
    """Each ledger stands for one process: its in-process lock does not see the other's."""
    first, second = build_ledger(pool), build_ledger(pool)
    account_id = unique("acct")
    await open_account(first, account_id, 100)

    async def spend(books: Ledger, n: int) -> bool:
        try:
            await books.execute(
                SpendCredits(account_id=account_id, amount=7, reason="work", idempotency_key=f"key-{n}")
            )
        except InsufficientCredits:
            return False
        return True

    try:
        outcomes = await asyncio.gather(*(spend(first if n % 2 else second, n) for n in range(30)))
    finally:
        await first.uow.committer.stop()
        await second.uow.committer.stop()

    assert outcomes.count(True) == 100 // 7
    account = await first.account(account_id, fresh=True)
    assert account.balance == 100 % 7
    assert account.version == 1 + 100 // 7
