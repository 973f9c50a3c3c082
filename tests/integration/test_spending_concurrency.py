"""Two processes' worth of writers on one account: optimistic concurrency decides."""

from __future__ import annotations

import asyncio

from ledger.accounts import AccountService, SpendCredits
from ledger.domain.errors import InsufficientCredits
from ledger.repository import Repository
from ledger.store.event_store import EventStore
from ledger.store.idempotency import IdempotencyStore
from tests.conftest import unique


async def test_writers_without_a_shared_lock_never_overdraw(store: EventStore) -> None:
    """Each service stands for one process: its in-process lock does not see the other's."""
    first, second = (
        AccountService(Repository(store), store, IdempotencyStore(store.pool)) for _ in range(2)
    )
    account_id = unique("acct")
    await first.open(account_id, 100)

    async def spend(service: AccountService, n: int) -> bool:
        try:
            await service.spend(SpendCredits(account_id, 7, "work", f"key-{n}"))
        except InsufficientCredits:
            return False
        return True

    outcomes = await asyncio.gather(*(spend(first if n % 2 else second, n) for n in range(30)))

    assert outcomes.count(True) == 100 // 7
    account = await first.get(account_id)
    assert account.balance == 100 % 7
    assert account.version == 1 + 100 // 7
