"""No session can hold the service up: a lock held elsewhere past the service's
``lock_timeout`` ends the request with a 503 and ``Retry-After``, never a 500 and never
a wait without end; once the lock is gone the same request answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import asyncpg
import httpx

from api.services import Services
from tests.conftest import unique
from tests.e2e.conftest import Customer
from tests.support.ledger import open_account


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


async def test_spends_queued_on_one_account_behind_a_lock_are_all_answered_within_its_timeout(
    http: httpx.AsyncClient, services: Services, writer_headers: dict[str, str], database_url: str
) -> None:
    """Commands on one account take turns in the process. Each used to wait for its turn
    without end, so behind a lock held elsewhere the n-th of n spends waited for the n - 1
    before it to meet the lock timeout, 5 s apiece: 30 s for the sixth. A command now waits
    for its turn as long as for a lock (503 with ``Retry-After``, nothing recorded)."""
    account_id = unique("acct")
    await open_account(services.ledger, account_id, 1000)

    async def spend(n: int) -> tuple[httpx.Response, float]:
        began = time.monotonic()
        answer = await http.post(
            f"/v1/accounts/{account_id}/spend",
            json={"amount": 1, "reason": f"queued {n}"},
            headers={**writer_headers, "Idempotency-Key": unique("queued")},
            timeout=60,
        )
        return answer, time.monotonic() - began

    stalled = await asyncpg.connect(database_url)  # as an operator's forgotten session
    try:
        transaction = stalled.transaction()
        await transaction.start()
        await stalled.execute("LOCK TABLE stored_events IN EXCLUSIVE MODE")
        answered = await asyncio.gather(*(spend(n) for n in range(6)))
        await transaction.rollback()
    finally:
        await stalled.close()

    for answer, _ in answered:
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"]
    # The first meets the lock timeout (5 s); any other waits at most that long for its
    # turn, and one turn more if the turn came just then.
    assert max(seconds for _, seconds in answered) < 14, [round(s, 1) for _, s in answered]
    after = await services.ledger.account(account_id, fresh=True)
    assert after.version == 1  # nothing recorded
    again = await http.post(
        f"/v1/accounts/{account_id}/spend",
        json={"amount": 1, "reason": "after"},
        headers={**writer_headers, "Idempotency-Key": unique("after")},
    )
    assert again.status_code == 200, again.text


async def test_reads_stuck_behind_a_lock_on_a_view_hold_up_a_spend_no_longer_than_the_wait(
    http: httpx.AsyncClient,
    services: Services,
    customer: Customer,
    writer_headers: dict[str, str],
    database_url: str,
) -> None:
    """Reads of a locked view each hold a pooled connection until the lock timeout; the
    rest queued for one, and a spend, which touches no such table, queued behind them all:
    three pools' worth of reads made it wait 15 s. A request now waits for a connection at
    most ``POOL_WAIT_SECONDS`` (503 with ``Retry-After``)."""
    spender = unique("acct")
    await open_account(services.ledger, spender, 1000)
    lines = "/v1/credits/transactions"
    assert (await http.get(lines, headers=customer.headers)).status_code == 200  # token known

    async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
        began = time.monotonic()
        answer = await request
        return answer, time.monotonic() - began

    stalled = await asyncpg.connect(database_url)  # as an operator's forgotten session
    try:
        transaction = stalled.transaction()
        await transaction.start()
        await stalled.execute("LOCK TABLE statement_lines IN ACCESS EXCLUSIVE MODE")
        pool_size = services.pool.get_max_size()
        async with httpx.AsyncClient(base_url=http.base_url, timeout=60) as readers:
            reads = [
                asyncio.ensure_future(timed(readers.get(lines, headers=customer.headers)))
                for _ in range(3 * pool_size)
            ]
            await asyncio.sleep(0.5)  # every read asked for its connection
            spend, seconds = await timed(
                http.post(
                    f"/v1/accounts/{spender}/spend",
                    json={"amount": 1, "reason": "behind the reads"},
                    headers={**writer_headers, "Idempotency-Key": unique("spend")},
                    timeout=60,
                )
            )
            answered = await asyncio.gather(*reads)
        await transaction.rollback()
    finally:
        await stalled.close()

    assert seconds < 9, (spend.status_code, round(seconds, 1))
    assert spend.status_code in (200, 503), spend.text
    for answer in [spend, *(read for read, _ in answered)]:
        if answer.status_code == 503:
            assert answer.headers["Retry-After"]
        else:
            assert answer.status_code == 200, answer.text
    # A read waits for its connection at most that long, then for the lock.
    assert max(s for _, s in answered) < 14
