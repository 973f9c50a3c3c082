"""The views equal a replay of the events, whatever happened and however often the projector stopped."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.commands import SpendCredits
from ledger.domain.account import CreditAccount
from ledger.domain.errors import InsufficientCredits, PeriodOutOfOrder
from ledger.domain.ids import account_stream_id
from ledger.service import Ledger
from ledger.store.event_store import EventStore
from ledger.store.repository import Repository
from projections.queries import Views
from projections.runner import all_projections, catch_up
from projections.statement import LAST_LINES
from tests.conftest import IsolatedDatabase, Ledgers, unique
from tests.support.events import caught_up, settled, views_past
from tests.support.ledger import open_account, save
from tests.support.plans import rows_read
from tests.support.waiting import until

operations = st.lists(
    st.one_of(
        st.tuples(st.just("purchase"), st.integers(100, 5000)),
        st.tuples(st.just("spend"), st.integers(1, 3000)),
        st.tuples(st.just("reset"), st.integers(1, 3)),
        st.tuples(st.just("clawback"), st.integers(1, 2000)),
        st.tuples(st.just("plan"), st.integers(0, 4000)),
        st.tuples(st.just("project"), st.just(0)),
    ),
    max_size=25,
)


async def apply_operation(
    books: Ledger, account_id: str, operation: tuple[str, int], month: list[int]
) -> None:
    account = await books.account(account_id)
    kind, n = operation
    try:
        if kind == "purchase":
            account.purchase(session_id=f"cs_{unique('p')}", credits=n)
        elif kind == "spend":
            account.spend(n, "work")
        elif kind == "reset":
            month[0] += n
            account.reset_month(f"{2030 + month[0] // 12}-{month[0] % 12 + 1:02d}")
        elif kind == "clawback":
            account.claw_back(session_id="cs_x", credits=n)
        elif kind == "plan":
            account.change_allowance(n)
    except (InsufficientCredits, PeriodOutOfOrder):
        return
    await save(books, account)


async def assert_views_match_the_events(store: EventStore, account_ids: list[str]) -> None:
    views = Views(store.pool)
    repository = Repository(store)
    for account_id in account_ids:
        replayed = await repository.get(CreditAccount, account_stream_id(account_id))
        projected = await views.balance(account_id)
        assert replayed is not None
        assert projected is not None
        assert (projected.allowance_remaining, projected.topup_balance, projected.period) == (
            replayed.allowance_remaining,
            replayed.topup_balance,
            replayed.period,
        )
        assert projected.monthly_allowance == replayed.monthly_allowance
        lines = await views.statement(account_id, limit=1000)
        assert lines[0].balance_after == replayed.balance
        assert sum(line.amount for line in lines) == replayed.balance


async def test_the_views_reach_what_settled_saw_though_a_later_look_stands_lower(
    isolated_db: IsolatedDatabase, pool: asyncpg.Pool
) -> None:
    """``settled`` passes a transaction of another database that is running; a later look
    counts it again if it ends between that look's snapshot and its read of the sessions
    (``WATERMARK``), and one catch-up then stopped before events ``settled`` had seen: a
    simulator view check found no balance row (twice, under load). Played here by a
    prepared transaction, which keeps its id but leaves its session."""
    if not await pool.fetchval("SELECT current_setting('max_prepared_transactions')::int"):
        pytest.skip("needs a server with max_prepared_transactions > 0")
    store = isolated_db.store
    account_id = unique("acct")
    name = unique("elsewhere")
    elsewhere = await pool.acquire()  # the suite's own database: another one
    try:
        await elsewhere.execute("BEGIN")
        await elsewhere.fetchval("SELECT pg_current_xact_id()")  # a writer: it has an id
        await open_account(isolated_db.ledger(), account_id, 100)
        tail = await settled(store)
        await elsewhere.execute(f"PREPARE TRANSACTION '{name}'")
        assert await catch_up(store, all_projections()) == 0  # it stops before the account

        async def commit_elsewhere() -> None:
            await asyncio.sleep(0.2)
            await pool.execute(f"COMMIT PREPARED '{name}'")

        committing = asyncio.create_task(commit_elsewhere())
        await views_past(store, tail)
        await committing
    finally:
        if await pool.fetchval("SELECT count(*) FROM pg_prepared_xacts WHERE gid = $1", name):
            await pool.execute(f"ROLLBACK PREPARED '{name}'")
        await pool.release(elsewhere)

    assert await Views(store.pool).balance(account_id) is not None


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(operations=operations)
async def test_projected_balances_equal_the_replayed_events(
    store: EventStore, operations: list[tuple[str, int]], ledgers: Ledgers
) -> None:
    accounts = ledgers(store.pool)
    account_id = unique("acct")
    await open_account(accounts, account_id, 1000)
    month = [0]

    for operation in operations:
        if operation[0] == "project":
            await caught_up(store)  # a projector that stops and starts
        else:
            await apply_operation(accounts, account_id, operation, month)
    await caught_up(store)

    await assert_views_match_the_events(store, [account_id])


async def test_a_projector_killed_between_batches_applies_every_event_once(
    store: EventStore, database_url: str, pool: asyncpg.Pool, ledgers: Ledgers
) -> None:
    await caught_up(store)
    accounts = ledgers(store.pool)
    account_ids = [unique("acct") for _ in range(20)]
    for account_id in account_ids:
        await open_account(accounts, account_id, 100_000)
    for round_ in range(60):
        await asyncio.gather(
            *(
                apply_operation(accounts, account_id, ("spend", 1 + round_ % 7), [0])
                for account_id in account_ids
            )
        )
    target = await store.head_position()

    killed_at = []
    for _ in range(3):  # start, let it get part of the way, kill it without warning
        before = await min_position(pool)
        projector = start_projector(database_url)
        await until(functools.partial(views_reached, pool, before + 1), seconds=30)
        projector.send_signal(signal.SIGKILL)
        projector.wait(timeout=10)
        killed_at.append(await min_position(pool))
    assert killed_at[-1] < target, "the projector finished before it could be killed"
    projector = start_projector(database_url)
    try:
        await until(lambda: views_reached(pool, target), seconds=60)
    finally:
        projector.send_signal(signal.SIGTERM)
        projector.wait(timeout=10)

    await assert_views_match_the_events(store, account_ids)
    for account_id in account_ids:
        lines = await Views(pool).statement(account_id, limit=1000)
        assert len(lines) == 61  # opened, then 60 spends: none lost, none twice
        assert len({line.position for line in lines}) == 61


def start_projector(database_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "project", "--batch-size", "5"],
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def min_position(pool: asyncpg.Pool) -> int:
    names = [p.name for p in all_projections()]
    rows = await pool.fetch("SELECT position FROM projection_positions WHERE name = any($1)", names)
    return min((r[0] for r in rows), default=0) if len(rows) == len(names) else 0


async def views_reached(pool: asyncpg.Pool, position: int) -> bool:
    """Whether every view has applied the store up to ``position``."""
    return await min_position(pool) >= position


async def test_two_projectors_at_once_apply_every_event_once(
    store: EventStore, database_url: str, pool: asyncpg.Pool, ledgers: Ledgers
) -> None:
    from projections.runner import Projector

    accounts = ledgers(store.pool)
    account_ids = [unique("acct") for _ in range(8)]
    for account_id in account_ids:
        await open_account(accounts, account_id, 10_000)
    stop = asyncio.Event()
    projectors = [
        asyncio.create_task(Projector(store, database_url, batch_size=3).run(stop))
        for _ in range(2)
    ]
    for n in range(25):
        await asyncio.gather(
            *(apply_operation(accounts, a, ("spend", 1 + n), [0]) for a in account_ids)
        )
    target = await store.head_position()
    await until(lambda: views_reached(pool, target), seconds=30)
    stop.set()
    await asyncio.gather(*projectors)

    await assert_views_match_the_events(store, account_ids)
    for account_id in account_ids:
        lines = await Views(pool).statement(account_id, limit=1000)
        assert len(lines) == 26


async def test_a_view_far_behind_catches_up_while_the_others_stay_current(
    isolated_db: IsolatedDatabase,
) -> None:
    """Views at different positions (a new or reset one) in the projector's shared batches."""
    store = isolated_db.store
    accounts = isolated_db.ledger()
    account_ids = [f"acct_behind_{n}" for n in range(3)]
    for account_id in account_ids:
        await open_account(accounts, account_id, 1000)
        for n in range(40):
            await apply_operation(accounts, account_id, ("spend", 3 + n), [0])
    await caught_up(store, batch_size=25)
    # The statement starts over, as a newly added view would.
    await isolated_db.pool.execute("TRUNCATE statement_lines")
    await isolated_db.pool.execute(
        "UPDATE projection_positions SET position = 0 WHERE name = 'statement'"
    )
    for account_id in account_ids:  # and writes go on meanwhile
        await apply_operation(accounts, account_id, ("purchase", 500), [0])

    applied = await caught_up(store, batch_size=25)

    head = await store.head_position()
    positions = dict(
        await isolated_db.pool.fetch("SELECT name, position FROM projection_positions")
    )
    assert set(positions.values()) == {head}
    assert applied == head + 3 * (len(all_projections()) - 1)  # the statement all; others 3
    await assert_views_match_the_events(store, account_ids)


async def test_the_statement_reads_one_line_per_account_however_long_its_history(
    isolated_db: IsolatedDatabase,
) -> None:
    """Each batch continues every touched account's statement from its last line: that
    read must not grow with the account's history (it read every line, sorted, before)."""
    books = isolated_db.ledger()
    account_id = unique("long-statement")
    await open_account(books, account_id, allowance=1_000)
    for n in range(200):
        await books.execute(
            SpendCredits(account_id=account_id, amount=1, reason="work", idempotency_key=f"k{n}")
        )
    await caught_up(isolated_db.store)
    stream_id = account_stream_id(account_id)

    query = LAST_LINES.format(table="statement_lines")
    [last] = await isolated_db.pool.fetch(query, [stream_id])

    assert await rows_read(isolated_db.pool, query, [stream_id]) == 1
    assert (last["account_id"], last["allowance_after"]) == (account_id, 800)
