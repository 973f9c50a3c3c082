"""The long-history account: one account with N events (default 100,000).

Made the way the service makes them, only many at once: a ``CreditAccount`` from the
domain (allowance 1,000,000,000) spends 1 credit N-1 times, and the ``Repository``
commits its pending events in batches through the group committer, taking the
snapshots that are due (every ``SNAPSHOT_EVERY`` events, at the end of a batch) just
as a save from the API would.

    python -m bench.history --database-url URL [--account acct_long] [--events 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import asyncpg

from ledger.domain.account import CreditAccount
from ledger.handlers.accounts import billing_period
from ledger.ports import system_clock
from ledger.store.commit import GroupCommitter
from ledger.store.event_store import EventStore
from ledger.store.migrate import set_up
from ledger.store.repository import Repository

ALLOWANCE = 1_000_000_000
BATCH = 1000


async def make_long_account(
    url: str, account_id: str, events: int, *, set_up_first: bool = True
) -> float:
    """Append ``account_id``'s ``events`` events (opened, then spends); return the seconds.

    ``set_up_first=False`` on a database set up already, where the service may be running
    (set-up replaces the stored functions and grants).
    """
    if events < 1:
        raise ValueError("an account has at least its AccountOpened event")
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        if set_up_first:
            async with pool.acquire() as connection:
                await set_up(connection)
        repository = Repository(EventStore(pool))
        committer = GroupCommitter(pool)

        async def save(account: CreditAccount) -> None:
            await committer.commit(repository.writes([account], []))

        started = time.perf_counter()
        account = CreditAccount.open(account_id, ALLOWANCE, billing_period(system_clock()))
        pending = 1
        for _ in range(events - 1):
            account.spend(1, "long history")
            pending += 1
            if pending == BATCH:
                await save(account)
                pending = 0
        if pending:
            await save(account)
        await committer.stop()
        return time.perf_counter() - started
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.history",
        description="Append one account with a long history (opened, then 1-credit spends)"
        " through the Repository, snapshots included.",
    )
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--account", default="acct_long")
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args(argv)
    seconds = asyncio.run(make_long_account(args.database_url, args.account, args.events))
    print(
        f"{args.account}: {args.events:,} events in {seconds:.1f} s"
        f" ({args.events / seconds:,.0f} events/s)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
