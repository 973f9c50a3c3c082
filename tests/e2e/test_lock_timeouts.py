"""No session can hold the service up: a lock held elsewhere past the service's
``lock_timeout`` ends the request with a 503 and ``Retry-After``, never a 500 and never
a wait without end; once the lock is gone the same request answers."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx

from api.services import Services
from tests.conftest import unique
from tests.e2e.conftest import Customer
from tests.support.ledger import conflicts_given_up, open_account


async def test_a_read_stuck_behind_a_lock_answers_503_after_the_lock_timeout(
    http: httpx.AsyncClient, customer: Customer, database_url: str
) -> None:
    stalled = await asyncpg.connect(database_url)  # as an operator's forgotten session
    try:
        transaction = stalled.transaction()
        await transaction.start()
        await stalled.execute("LOCK TABLE balances IN ACCESS EXCLUSIVE MODE")
        # Without the timeout this would wait for the lock until the client gave up.
        answer = await http.get("/v1/credits", headers=customer.headers, timeout=30)
        await transaction.rollback()
    finally:
        await stalled.close()

    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"]
    assert set(answer.json()) >= {"message"}
    after = await http.get("/v1/credits", headers=customer.headers)
    assert after.status_code == 200


async def test_spends_queued_on_one_account_behind_a_lock_give_up_their_turn_not_queue_on(
    http: httpx.AsyncClient, services: Services, writer_headers: dict[str, str], database_url: str
) -> None:
    """Commands on one account take turns in the process. Each used to wait for its turn
    without end, so behind a lock held elsewhere the n-th of n spends waited for the n - 1
    before it to meet the lock timeout, 5 s apiece: 30 s for the sixth. A command now waits
    for its turn as long as for a lock, then gives up (503 with ``Retry-After``, nothing
    recorded; counted as a conflict given up)."""
    account_id = unique("acct")
    await open_account(services.ledger, account_id, 1000)

    async def spend(n: int) -> httpx.Response:
        return await http.post(
            f"/v1/accounts/{account_id}/spend",
            json={"amount": 1, "reason": f"queued {n}"},
            headers={**writer_headers, "Idempotency-Key": unique("queued")},
            timeout=60,
        )

    given_up = conflicts_given_up()
    stalled = await asyncpg.connect(database_url)  # as an operator's forgotten session
    try:
        transaction = stalled.transaction()
        await transaction.start()
        await stalled.execute("LOCK TABLE stored_events IN EXCLUSIVE MODE")
        answered = await asyncio.gather(*(spend(n) for n in range(6)))
        await transaction.rollback()
    finally:
        await stalled.close()

    for answer in answered:
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"]
    # The first met the lock timeout in PostgreSQL, and at most one other had its turn as
    # it let go: the rest gave up waiting for theirs, where each queued for all before it.
    assert conflicts_given_up() - given_up >= 4
    after = await services.ledger.account(account_id, fresh=True)
    assert after.version == 1  # nothing recorded
    again = await http.post(
        f"/v1/accounts/{account_id}/spend",
        json={"amount": 1, "reason": "after"},
        headers={**writer_headers, "Idempotency-Key": unique("after")},
    )
    assert again.status_code == 200, again.text


async def test_reads_stuck_behind_a_lock_on_a_view_give_up_waiting_for_a_connection(
    http: httpx.AsyncClient,
    services: Services,
    customer: Customer,
    writer_headers: dict[str, str],
    database_url: str,
) -> None:
    """Reads of a locked view each hold a pooled connection until the lock timeout; the
    rest queued for one, and a spend, which touches no such table, queued behind them all:
    three pools' worth of reads made it wait 15 s. A read now waits for a connection at
    most ``POOL_WAIT_SECONDS`` and is answered busy (503 with ``Retry-After``): the third
    pool's worth of reads cannot have one before the second lets go, so they give up. The
    spend takes a connection the reads may not (``KEPT_FOR_COMMANDS``)."""
    spender = unique("acct")
    await open_account(services.ledger, spender, 1000)
    lines = "/v1/credits/transactions"
    assert (await http.get(lines, headers=customer.headers)).status_code == 200  # token known

    stalled = await asyncpg.connect(database_url)  # as an operator's forgotten session
    try:
        transaction = stalled.transaction()
        await transaction.start()
        await stalled.execute("LOCK TABLE statement_lines IN ACCESS EXCLUSIVE MODE")
        pool_size = services.pool.get_max_size()
        async with httpx.AsyncClient(base_url=http.base_url, timeout=60) as readers:
            reads = [
                asyncio.ensure_future(readers.get(lines, headers=customer.headers))
                for _ in range(3 * pool_size)
            ]
            await asyncio.sleep(0.5)  # every read asked for its connection
            spend = await http.post(
                f"/v1/accounts/{spender}/spend",
                json={"amount": 1, "reason": "behind the reads"},
                headers={**writer_headers, "Idempotency-Key": unique("spend")},
                timeout=60,
            )
            answered = await asyncio.gather(*reads)
        await transaction.rollback()
    finally:
        await stalled.close()

    assert spend.status_code == 200, spend.text
    for answer in answered:
        if answer.status_code == 503:
            assert answer.headers["Retry-After"]
        else:
            assert answer.status_code == 200, answer.text
    busy = [a for a in answered if a.json() == {"message": "The ledger is busy; please retry."}]
    assert len(busy) >= pool_size, [a.json() for a in answered]
