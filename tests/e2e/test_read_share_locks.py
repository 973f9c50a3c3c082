"""No kind of read stalls a command: reads stuck behind a lock (an operator's ``LOCK
TABLE``, a migration), more of them than the pool has connections, hold only the reads'
share of the API's pool (ledger/store/read_connections.py), and a spend, which touches
none of the locked tables, is answered and recorded meanwhile.

Each case is a read that took its connection from the whole pool. The table locked is
one the read waits for and the spend does not touch: ``snapshots`` for the reads of
aggregates not in memory (the spender's account is), a view or a table of its own
otherwise. (An account's events are read from ``stored_events``, which every spend
writes: whether an account exists is shown to take from the share in test_read_share.)"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from api.access.tokens import Scope
from api.services import Services
from tests.conftest import unique
from tests.e2e.conftest import Customer
from tests.support.ledger import open_account
from tests.support.waiting import until


@dataclass
class StuckRead:
    path: str
    headers: dict[str, str]
    table: str
    """What an operator's session locks, so that the read waits and the spend does not."""
    forget: Callable[[], Awaitable[None]] | None = None
    """Drops what the read would find in memory (it then reads the store)."""


async def _forget_account(services: Services, account_id: str) -> None:
    ledger = services.ledger
    ledger.repository.forget([await ledger.account(account_id)])


async def _balance_from_the_store(
    http: httpx.AsyncClient, services: Services, customer: Customer, writer: dict[str, str]
) -> StuckRead:
    # The suite's API runs no projector: a balance read finds no row in the view and reads
    # the account from the store (account_now), as it does while the view is behind.
    assert await services.views.balance(customer.account_id) is None
    return StuckRead(
        "/v1/credits",
        customer.headers,
        "snapshots",
        lambda: _forget_account(services, customer.account_id),
    )


async def _hold(
    http: httpx.AsyncClient, services: Services, customer: Customer, writer: dict[str, str]
) -> StuckRead:
    placed = await http.post(
        f"/v1/accounts/{customer.account_id}/holds",
        json={"amount": 5, "expires_in_seconds": 600, "reason": "looked at"},
        headers={**writer, "Idempotency-Key": unique("hold")},
    )
    assert placed.status_code == 201, placed.text
    return StuckRead(
        f"/v1/accounts/{customer.account_id}/holds/{placed.json()['hold_id']}",
        writer,
        "snapshots",
        lambda: _forget_account(services, customer.account_id),
    )


async def _checkout_page(
    http: httpx.AsyncClient, services: Services, customer: Customer, writer: dict[str, str]
) -> StuckRead:
    bought = await http.post(
        "/v1/credits/purchase", json={"credits": 100}, headers=customer.headers
    )
    assert bought.status_code == 200, bought.text
    session_id = bought.json()["session_id"]
    session = await services.ledger.session(session_id)
    assert session is not None
    token = services.page_tokens.for_checkout(customer.account_id, session.expires_at)

    async def forget() -> None:
        found = await services.ledger.session(session_id)
        assert found is not None
        services.ledger.repository.forget([found])

    return StuckRead(
        f"/checkout/success?session_id={session_id}&t={token}", {}, "snapshots", forget
    )


async def _grants(
    http: httpx.AsyncClient, services: Services, customer: Customer, writer: dict[str, str]
) -> StuckRead:
    # The list looks for the account first (404 for none), before the view.
    return StuckRead(
        f"/v1/accounts/{customer.account_id}/grants",
        writer,
        "snapshots",
        lambda: _forget_account(services, customer.account_id),
    )


async def _webhook_endpoints(
    http: httpx.AsyncClient, services: Services, customer: Customer, writer: dict[str, str]
) -> StuckRead:
    return StuckRead("/v1/webhook-endpoints", writer, "webhook_endpoints")


async def _token_not_in_memory(
    http: httpx.AsyncClient, services: Services, customer: Customer, writer: dict[str, str]
) -> StuckRead:
    # A token the process has not checked yet: each read looks it up in api_tokens.
    fresh = await services.tokens.issue(Scope.CREDITS, account_id=customer.account_id)
    return StuckRead("/v1/credits", {"Authorization": f"Bearer {fresh.secret}"}, "api_tokens")


async def _view(
    http: httpx.AsyncClient, services: Services, customer: Customer, writer: dict[str, str]
) -> StuckRead:
    # The customer's statement, read from its view.
    return StuckRead("/v1/credits/transactions", customer.headers, "statement_lines")


async def _metrics(
    http: httpx.AsyncClient, services: Services, customer: Customer, writer: dict[str, str]
) -> StuckRead:
    # A scrape reads the views' positions and backlogs (holds, grants, deliveries).
    return StuckRead("/metrics", {}, "holds")


CASES = {
    "view": _view,
    "balance from the store": _balance_from_the_store,
    "hold": _hold,
    "checkout page": _checkout_page,
    "grants": _grants,
    "webhook endpoints": _webhook_endpoints,
    "token not in memory": _token_not_in_memory,
    "metrics": _metrics,
}


async def _sessions_waiting_for_a_lock(database_url: str) -> int:
    # A connection of its own: in a transaction, pg_stat_activity stays as it first read it.
    connection = await asyncpg.connect(database_url)
    try:
        waiting = await connection.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND wait_event_type = 'Lock'"""
        )
    finally:
        await connection.close()
    return int(waiting)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_a_spend_is_answered_while_reads_stuck_behind_a_lock_hold_what_reads_may(
    case: Callable[..., Awaitable[StuckRead]],
    http: httpx.AsyncClient,
    services: Services,
    customer: Customer,
    writer_headers: dict[str, str],
    database_url: str,
) -> None:
    spender = unique("acct")
    await open_account(services.ledger, spender, 1000)
    stuck = await case(http, services, customer, writer_headers)
    if stuck.table != "api_tokens":  # the token known, as a caller's usually is
        first = await http.get(stuck.path, headers=stuck.headers)
        assert first.status_code == 200, first.text

    async def spend(key: str) -> httpx.Response:
        return await http.post(
            f"/v1/accounts/{spender}/spend",
            json={"amount": 7, "reason": "beside the reads"},
            headers={**writer_headers, "Idempotency-Key": key},
            timeout=60,
        )

    assert (await spend(unique("first"))).status_code == 200  # the writer's token known
    pool = services.pool
    share = services.read_pool
    assert share is not None
    assert share.limit < pool.get_max_size()
    waited = pool.wait_seconds
    key = unique("spend")
    stalled = await asyncpg.connect(database_url)  # as an operator's forgotten session
    try:
        transaction = stalled.transaction()
        await transaction.start()
        await stalled.execute(f"LOCK TABLE {stuck.table} IN ACCESS EXCLUSIVE MODE")
        if stuck.forget is not None:
            await stuck.forget()
        async with httpx.AsyncClient(base_url=http.base_url, timeout=60) as readers:
            reads: list[asyncio.Future[httpx.Response]] = []

            def more_reads() -> None:
                reads.extend(
                    asyncio.ensure_future(readers.get(stuck.path, headers=stuck.headers))
                    for _ in range(pool.get_max_size() + 5)
                )

            more_reads()

            async def reads_hold_what_they_may() -> bool:
                if all(read.done() for read in reads):
                    # All answered before enough waited at once: a scrape waits for the
                    # database 2 s at most (api/metrics.py), and on a loaded machine the
                    # first gave up before the last had arrived (CI at 0408ec2).
                    more_reads()
                return await _sessions_waiting_for_a_lock(database_url) >= share.limit

            await until(reads_hold_what_they_may, what="reads waiting for the lock")
            # Their lock waits end at the lock timeout (5 s), as long as a request waits for
            # a connection: a spend queued behind them had one just as it would have given
            # up. A shorter wait tells the two apart.
            pool.wait_seconds = 1.0
            spent = await spend(key)
            await transaction.rollback()
            answered = await asyncio.gather(*reads)
    finally:
        pool.wait_seconds = waited
        await stalled.close()

    assert spent.status_code == 200, spent.text
    account = await services.ledger.account(spender, fresh=True)
    assert (account.version, account.balance) == (3, 1000 - 7 - 7)  # recorded
    again = await spend(key)
    assert (again.status_code, again.json()) == (200, spent.json())
    for answer in answered:  # the lock's or the wait's 503, or the read once it was gone
        if answer.status_code == 503:
            assert answer.headers["Retry-After"]
            assert set(answer.json()) == {"message"}
        else:
            assert answer.status_code == 200, answer.text
    after = await http.get(stuck.path, headers=stuck.headers)
    assert after.status_code == 200, after.text


async def test_a_spend_is_answered_while_reads_tokens_uses_meet_a_lock(
    http: httpx.AsyncClient,
    services: Services,
    customer: Customer,
    writer_headers: dict[str, str],
    database_url: str,
) -> None:
    """Each token's use is written in the background, at most once a minute. Behind a lock
    on api_tokens each of those writes held a connection of the pool until the lock timeout
    (5 s): reads with as many tokens in a minute as the pool has connections, each answered
    at once from memory, left the spends none. A use is now written with the reads'
    connections, and given up on if it meets a lock."""
    spender = unique("acct")
    await open_account(services.ledger, spender, 1000)
    pool = services.pool
    share = services.read_pool
    assert share is not None
    tokens = [
        (await services.tokens.issue(Scope.CREDITS, account_id=customer.account_id)).secret
        for _ in range(pool.get_max_size() + 5)
    ]
    for token in tokens:  # each one known to the process, its use written
        read = await http.get("/v1/credits", headers={"Authorization": f"Bearer {token}"})
        assert read.status_code == 200, read.text

    async def spend(key: str) -> httpx.Response:
        return await http.post(
            f"/v1/accounts/{spender}/spend",
            json={"amount": 7, "reason": "beside the uses"},
            headers={**writer_headers, "Idempotency-Key": key},
            timeout=60,
        )

    assert (await spend(unique("first"))).status_code == 200  # the writer's token known
    services.tokens._use_noted.clear()  # as a minute later: each use is written again
    waited = pool.wait_seconds
    stalled = await asyncpg.connect(database_url)  # as an operator's forgotten session
    try:
        transaction = stalled.transaction()
        await transaction.start()
        await stalled.execute("LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE")
        async with httpx.AsyncClient(base_url=http.base_url, timeout=60) as readers:
            reads = [
                asyncio.ensure_future(
                    readers.get("/v1/credits", headers={"Authorization": f"Bearer {token}"})
                )
                for token in tokens
            ]

            async def uses_wait_or_gave_up() -> bool:
                if all(read.done() for read in reads) and not services.tokens._use_writes:
                    return True  # each use met the lock and was given up on
                return await _sessions_waiting_for_a_lock(database_url) >= share.limit

            await until(uses_wait_or_gave_up, what="uses waiting for the lock, or given up")
            pool.wait_seconds = 1.0  # shorter than the lock timeout: tells the two apart
            spent = await spend(unique("spend"))
            await transaction.rollback()
            answered = await asyncio.gather(*reads)
    finally:
        pool.wait_seconds = waited
        await stalled.close()

    assert spent.status_code == 200, spent.text
    assert [a.status_code for a in answered] == [200] * len(tokens)  # from memory
