"""No session can hold the service up: a lock held elsewhere past the service's
``lock_timeout`` ends the request with a 503 and ``Retry-After``, never a 500 and never
a wait without end; once the lock is gone the same request answers."""

from __future__ import annotations

import asyncpg
import httpx

from tests.e2e.conftest import Customer


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
