"""Reads of the primary take their connections from their share of the API's pool
(ledger/store/read_connections.py): with that share all taken, every kind of read waits
for it and is answered busy, while the commands still have the rest of the pool."""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import UTC, datetime

import httpx
import pytest

from api.access.tokens import Scope
from api.services import Services
from ledger.store.read_connections import PoolBusy
from tests.conftest import unique
from tests.e2e.conftest import Customer
from tests.support.ledger import open_account

BUSY = {"message": "The ledger is busy; please retry."}

READS = {
    "balance": "/v1/credits",
    "lines": "/v1/credits/transactions",
    "purchases": "/v1/credits/purchases",
    "history": "/v1/accounts/{account}/events",
    "as of": "/v1/accounts/{account}/credits?as_of={moment}",
    "grants": "/v1/accounts/{account}/grants",
}


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
async def test_a_read_waits_for_the_reads_share_while_a_spend_has_the_rest_of_the_pool(
    read: str,
    http: httpx.AsyncClient,
    services: Services,
    customer: Customer,
    writer_headers: dict[str, str],
    auditor_headers: dict[str, str],
) -> None:
    """Each of these reads could hold its connection long (behind a lock on its view, or
    replaying a long history as of a moment). The as-of replays, the grants' list and the
    reads' look at the store's head took theirs from the whole pool, where enough of them
    left none for the commands."""
    spender = unique("acct")
    await open_account(services.ledger, spender, 1000)
    moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # the account opened
    path = read.format(account=customer.account_id, moment=moment)
    # A token that may read it: the customer's own, the auditor's for the grants.
    headers = auditor_headers if path.endswith("/grants") else customer.headers
    assert (await http.get(path, headers=headers)).status_code == 200  # token known
    spend_headers = {**writer_headers, "Idempotency-Key": unique("first")}
    spend_path = f"/v1/accounts/{spender}/spend"
    body = {"amount": 1, "reason": "beside the reads"}
    assert (await http.post(spend_path, json=body, headers=spend_headers)).status_code == 200

    reads = services.read_pool
    assert reads is not None
    waited, reads.wait_seconds = reads.wait_seconds, 0.2
    try:
        async with AsyncExitStack() as held:
            for _ in range(reads.limit):  # as reads stuck behind a lock would
                await held.enter_async_context(reads.acquire())
            answer = await http.get(path, headers=headers)
            spent = await http.post(
                spend_path,
                json=body,
                headers={**writer_headers, "Idempotency-Key": unique("spend")},
            )
    finally:
        reads.wait_seconds = waited

    assert (answer.status_code, answer.json()) == (503, BUSY), answer.text
    assert answer.headers["Retry-After"]
    assert spent.status_code == 200, spent.text
    assert (await http.get(path, headers=headers)).status_code == 200


async def test_the_ledgers_reads_of_the_store_wait_for_the_reads_share(
    http: httpx.AsyncClient,
    services: Services,
    customer: Customer,
    writer_headers: dict[str, str],
) -> None:
    """The reads of the write side that no command makes (a balance read's fallback to the
    store, whether an account exists, a hold as it stands, a Checkout session for its
    page, the grants list's look for the account) took their connections from the whole
    pool, where enough of them, behind a lock or in a flood, left none for the commands."""
    account_id = customer.account_id
    base = f"/v1/accounts/{account_id}/holds"
    placed = await http.post(
        base,
        json={"amount": 5, "expires_in_seconds": 600, "reason": "shown"},
        headers={**writer_headers, "Idempotency-Key": unique("hold")},
    )
    settled = await http.post(
        base,
        json={"amount": 5, "expires_in_seconds": 600, "reason": "settled"},
        headers={**writer_headers, "Idempotency-Key": unique("hold")},
    )
    assert placed.status_code == settled.status_code == 201, (placed.text, settled.text)
    hold_id, settled_id = placed.json()["hold_id"], settled.json()["hold_id"]
    released = await http.post(f"{base}/{settled_id}/release", headers=writer_headers)
    assert released.status_code == 200, released.text
    bought = await http.post(
        "/v1/credits/purchase", json={"credits": 100}, headers=customer.headers
    )
    assert bought.status_code == 200, bought.text
    session_id = bought.json()["session_id"]
    ledger = services.ledger
    reads = {
        "account": lambda: ledger.account(account_id, fresh=True),
        "account now": lambda: ledger.account_now(account_id),
        "no such account": lambda: ledger.account_exists(unique("acct")),
        "open hold": lambda: ledger.hold(account_id, hold_id),
        "settled hold": lambda: ledger.hold(account_id, settled_id),
        "session": lambda: ledger.session(session_id, fresh=True),
    }
    share = services.read_pool
    assert share is not None
    waited, share.wait_seconds = share.wait_seconds, 0.2
    busy = {}
    try:
        async with AsyncExitStack() as held:
            for _ in range(share.limit):  # as reads stuck behind a lock would
                await held.enter_async_context(share.acquire())
            for name, read in reads.items():
                try:
                    await read()
                except PoolBusy:
                    busy[name] = True
                else:
                    busy[name] = False
    finally:
        share.wait_seconds = waited

    assert busy == dict.fromkeys(reads, True)
    for read in reads.values():  # and once the share has room
        await read()


async def test_a_commands_token_not_in_memory_is_looked_up_beside_the_reads_share(
    http: httpx.AsyncClient, services: Services, customer: Customer
) -> None:
    """A read's token, when the process has not checked it lately, is looked up with the
    reads' connections; a command's is the command's own read, on the rest of the pool:
    a spend with a token new to the process is answered while reads hold their share."""
    issued = await services.tokens.issue(Scope.LEDGER_WRITE, name="new to the process")
    share = services.read_pool
    assert share is not None
    waited, share.wait_seconds = share.wait_seconds, 0.2
    try:
        async with AsyncExitStack() as held:
            for _ in range(share.limit):
                await held.enter_async_context(share.acquire())
            spent = await http.post(
                f"/v1/accounts/{customer.account_id}/spend",
                json={"amount": 1, "reason": "a token new here"},
                headers={
                    "Authorization": f"Bearer {issued.secret}",
                    "Idempotency-Key": unique("spend"),
                },
            )
    finally:
        share.wait_seconds = waited

    assert spent.status_code == 200, spent.text


async def test_a_scrape_while_reads_hold_their_share_waits_for_none_and_says_the_database_up(
    http: httpx.AsyncClient, services: Services
) -> None:
    """A scrape reads the database with the reads' connections. While reads hold them all
    it does not wait for one (its 2 s would end first, and say the database down while only
    reads wait): the database gauges keep their last values, the share's show it full."""
    assert "ledger_database_up 1.0" in (await http.get("/metrics")).text
    share = services.read_pool
    assert share is not None
    async with AsyncExitStack() as held:
        for _ in range(share.limit):
            await held.enter_async_context(share.acquire())
        scraped = await http.get("/metrics")

    assert scraped.status_code == 200
    assert "ledger_database_up 1.0" in scraped.text
    assert f"ledger_db_pool_read_connections {float(share.limit)}" in scraped.text
