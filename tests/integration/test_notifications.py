"""Outbound notifications end to end: events → outbox (projection) → dispatcher → a real receiver.

Real PostgreSQL (a database of each test's own), a real HTTP receiver, the
real projector and dispatcher; the backoff schedule is in tenths of seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
import stripe

from api.database import as_role, owner_connection
from ledger.domain.account import CreditAccount
from ledger.notifications.dispatcher import CONCURRENCY, PER_ENDPOINT, Dispatcher
from ledger.notifications.endpoints import CreatedEndpoint, EndpointRegistry
from ledger.notifications.outbox import (
    DEFAULT_SCHEDULE,
    JITTER,
    claim_due,
    list_deliveries,
)
from ledger.service import Ledger
from projections.notifications import NotificationsProjection
from projections.rebuild import rebuild
from projections.runner import Projector
from tests.conftest import IsolatedDatabase, unique
from tests.support import cli
from tests.support.events import caught_up
from tests.support.ledger import save
from tests.support.waiting import until
from tests.support.webhook_receiver import Receiver, webhook_receiver

ledger = functools.partial(cli.ledger, seconds=60)

FAST_SCHEDULE = (0.2, 0.2, 0.2)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with webhook_receiver() as running:
        yield running


@asynccontextmanager
async def notifier(
    db: IsolatedDatabase,
    *,
    dispatchers: int = 1,
    schedule: tuple[float, ...] = FAST_SCHEDULE,
    request_seconds: float = 10.0,
) -> AsyncIterator[None]:
    """The projector and dispatcher(s) as ``ledger project`` runs them, until the block ends."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(Projector(db.store, db.url).run(stop))]
    tasks += [
        asyncio.create_task(
            # The receivers listen on 127.0.0.1 (LEDGER_WEBHOOK_ALLOW_PRIVATE=1, as it were).
            Dispatcher(
                db.pool,
                db.url,
                schedule=schedule,
                timeout=request_seconds,
                poll_seconds=0.1,
                allow_private=True,
            ).run(stop)
        )
        for _ in range(dispatchers)
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def open_account(books: Ledger, allowance: int = 1000) -> str:
    account_id = unique("acct")
    await save(books, CreditAccount.open(account_id, allowance, "2030-01"))
    return account_id


async def act(
    books: Ledger, account_id: str, *actions: Callable[[CreditAccount], Any]
) -> CreditAccount:
    """Load the account, run ``actions`` on it and save what they recorded, in one append."""
    account = await books.account(account_id)
    for action in actions:
        action(account)
    await save(books, account)
    return account


def spend(amount: int) -> Callable[[CreditAccount], Any]:
    return lambda account: account.spend(amount, "work")


def purchase(credits: int) -> Callable[[CreditAccount], Any]:
    return lambda account: account.purchase(session_id=unique("cs"), credits=credits)


def verified(received: Any, endpoint: CreatedEndpoint) -> dict[str, Any]:
    """The notification, after the receiver's check of its signature with the Stripe SDK."""
    assert stripe.WebhookSignature.verify_header(received.body, received.signature, endpoint.secret)
    return received.json  # type: ignore[no-any-return]


async def test_notifications_arrive_signed_and_only_the_subscribed_types(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    registry = EndpointRegistry(isolated_db.pool, allow_private=True)
    spends = await registry.create(receiver.url("spends"), ["credits.spent"])
    money = await registry.create(
        receiver.url("money"), ["credits.purchased", "credits.low_balance"]
    )
    repository = isolated_db.ledger()
    account_id = await open_account(repository, 1000)  # threshold: 100

    async with notifier(isolated_db):
        sent = time.monotonic()
        await act(repository, account_id, spend(100))
        [first] = await receiver.wait_for("spends", 1)
        await act(repository, account_id, purchase(500))
        await act(repository, account_id, spend(1350))  # available 1400 → 50: low
        await receiver.wait_for("spends", 2)
        await receiver.wait_for("money", 2)

    assert first.at - sent < 1.5  # a healthy receiver hears of it at once, not at the next poll
    spent = [verified(r, spends) for r in receiver.at("spends")]
    assert [n["type"] for n in spent] == ["credits.spent", "credits.spent"]
    assert spent[0]["data"] == spent[0]["data"] | {
        "account_id": account_id,
        "amount": 100,
        "from_allowance": 100,
        "from_topup": 0,
        "reason": "work",
        "hold_id": None,
        "balance": 900,
        "available": 900,
        "held": 0,
        "allowance_remaining": 900,
        "topup_balance": 0,
        "low_balance_threshold": 100,
    }
    assert isinstance(spent[0]["created"], int)
    assert spent[0]["id"].startswith("evt_")
    other = [verified(r, money) for r in receiver.at("money")]
    assert [n["type"] for n in other] == ["credits.purchased", "credits.low_balance"]
    assert other[0]["data"]["credits"] == 500
    assert other[1]["data"]["available"] == 50
    # Signed with each endpoint's own secret: another endpoint's does not verify.
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(
            receiver.at("money")[0].body, receiver.at("money")[0].signature, spends.secret
        )
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 4  # nothing else was sent to anyone


async def test_a_receiver_failing_its_first_attempts_gets_the_notification_later(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    endpoint = await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        receiver.url("flaky"), ["credits.spent"]
    )
    repository = isolated_db.ledger()
    account_id = await open_account(repository)
    receiver.fail_first["flaky"] = 2

    async with notifier(isolated_db):
        await act(repository, account_id, spend(10))
        [got] = await receiver.wait_for("flaky", 1)
        await asyncio.sleep(0.1)  # the dispatcher records the last attempt after the answer

    assert verified(got, endpoint)["type"] == "credits.spent"
    assert receiver.answered == [("flaky", 503), ("flaky", 503), ("flaky", 200)]
    [delivery] = await list_deliveries(isolated_db.pool)
    assert delivery.status == "delivered"
    assert delivery.attempts == 3
    assert [(a.attempt, a.status_code) for a in delivery.history] == [(1, 503), (2, 503), (3, 200)]
    assert delivery.history[0].error is not None
    assert "503" in delivery.history[0].error
    assert delivery.history[2].error is None
    assert all(a.duration_ms >= 0 for a in delivery.history)


async def test_nothing_is_lost_when_the_service_restarts_in_between(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    endpoint = await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        receiver.url("later"), ["credits.spent"]
    )
    repository = isolated_db.ledger()
    account_id = await open_account(repository)
    receiver.failing.add("later")

    async with notifier(isolated_db):
        await act(repository, account_id, spend(1))
        await until(lambda: receiver.answered)  # the first attempt failed
    # Down: the service is stopped; events keep being recorded meanwhile.
    await act(repository, account_id, spend(2))
    await act(repository, account_id, spend(3))
    receiver.failing.clear()
    async with notifier(isolated_db):  # a new projector and dispatcher, state from the tables only
        got = await receiver.wait_for("later", 3)
        await asyncio.sleep(0.3)

    amounts = sorted(verified(r, endpoint)["data"]["amount"] for r in got)
    assert amounts == [1, 2, 3]
    assert len({r.json["id"] for r in receiver.received}) == 3 == len(receiver.received)
    deliveries = await list_deliveries(isolated_db.pool)
    assert {d.status for d in deliveries} == {"delivered"}
    first = next(d for d in deliveries if d.history[0].status_code == 503)
    assert [a.status_code for a in first.history] == [503, 200]


async def test_a_delivery_whose_dispatcher_died_mid_request_is_sent_after_its_lease(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    endpoint = await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        receiver.url("orphan"), ["credits.spent"]
    )
    repository = isolated_db.ledger()
    account_id = await open_account(repository)
    await act(repository, account_id, spend(5))
    stop = asyncio.Event()
    projector = asyncio.create_task(Projector(isolated_db.store, isolated_db.url).run(stop))
    await until(lambda: list_deliveries(isolated_db.pool))
    stop.set()
    await projector
    # A dispatcher claims it and dies before it can send or record anything.
    [claimed] = await claim_due(isolated_db.pool, 10, lease_seconds=0.5)

    async with notifier(isolated_db):
        [got] = await receiver.wait_for("orphan", 1)
        await asyncio.sleep(0.1)

    assert verified(got, endpoint)["id"] == claimed.notification_id
    [delivery] = await list_deliveries(isolated_db.pool)
    assert delivery.status == "delivered"
    assert [a.attempt for a in delivery.history] == [2]  # the lost attempt left no record


async def test_two_dispatchers_send_each_notification_once(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    endpoint = await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        receiver.url("both"), ["credits.spent"]
    )
    repository = isolated_db.ledger()
    account_ids = [await open_account(repository, 10_000) for _ in range(4)]

    async with notifier(isolated_db, dispatchers=2):
        for n in range(10):
            await asyncio.gather(*(act(repository, a, spend(n + 1)) for a in account_ids))
        got = await receiver.wait_for("both", 40)
        await asyncio.sleep(0.5)

    assert len(receiver.received) == 40
    assert len({verified(r, endpoint)["id"] for r in got}) == 40


async def test_low_balance_fires_once_per_crossing_and_depleted_once(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    endpoint = await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        receiver.url("alerts"), ["credits.low_balance", "credits.depleted"]
    )
    repository = isolated_db.ledger()
    account_id = await open_account(repository, 1000)  # threshold: 10 % = 100

    async with notifier(isolated_db):
        await act(repository, account_id, spend(850))  # 150: above the line
        await act(repository, account_id, spend(60))  # 90: crosses → alert 1
        for _ in range(4):
            await act(repository, account_id, spend(10))  # 80, 70, 60, 50: still below, quiet
        await act(repository, account_id, purchase(200))  # 250: back above, re-armed
        await act(repository, account_id, spend(200))  # 50: crosses again → alert 2
        await act(repository, account_id, spend(50))  # 0: depleted (already low: no third)
        await act(repository, account_id, purchase(30))  # 30: not depleted, still low
        await act(repository, account_id, spend(30))  # 0: depleted again → depleted 2
        await act(repository, account_id, lambda a: a.claw_back("cs_x", 5))  # -5: quiet
        await receiver.wait_for("alerts", 4)
        await asyncio.sleep(0.5)

    alerts = [verified(r, endpoint) for r in receiver.at("alerts")]
    assert [(n["type"], n["data"]["available"]) for n in alerts] == [
        ("credits.low_balance", 90),
        ("credits.low_balance", 50),
        ("credits.depleted", 0),
        ("credits.depleted", 0),
    ]
    assert all(n["data"]["low_balance_threshold"] == 100 for n in alerts)


async def test_a_threshold_set_above_the_available_balance_alerts_once(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    endpoint = await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        receiver.url("threshold"), ["credits.low_balance"]
    )
    repository = isolated_db.ledger()
    account_id = await open_account(repository, 1000)

    async with notifier(isolated_db):
        await act(repository, account_id, spend(500))  # 500, default line 100: fine
        await act(repository, account_id, lambda a: a.set_low_balance_threshold(600))  # low now
        await act(repository, account_id, spend(10))  # still low: quiet
        await act(repository, account_id, lambda a: a.set_low_balance_threshold(None))  # re-armed
        await act(repository, account_id, spend(420))  # 70 < 100: alert again
        await receiver.wait_for("threshold", 2)
        await asyncio.sleep(0.3)

    alerts = [verified(r, endpoint)["data"] for r in receiver.at("threshold")]
    assert [(d["available"], d["low_balance_threshold"]) for d in alerts] == [(500, 600), (70, 100)]


async def test_expired_holds_and_captures_are_notified(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    endpoint = await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        receiver.url("holds"), ["hold.expired", "credits.spent"]
    )
    repository = isolated_db.ledger()
    account_id = await open_account(repository, 1000)
    soon = datetime.now(UTC) + timedelta(minutes=5)
    later = soon + timedelta(minutes=1)

    async with notifier(isolated_db):
        await act(
            repository,
            account_id,
            lambda a: a.place_hold("hold_a", 300, "render", expires_at=soon),
            lambda a: a.place_hold("hold_b", 200, "train", expires_at=soon),
        )
        await act(repository, account_id, lambda a: a.expire_hold("hold_a", now=later))
        await act(
            repository, account_id, lambda a: a.capture_hold("hold_b", 150, now=datetime.now(UTC))
        )
        await act(
            repository, account_id, lambda a: a.place_hold("hold_c", 10, "x", expires_at=soon)
        )
        await act(
            repository, account_id, lambda a: a.capture_hold("hold_c", 0, now=datetime.now(UTC))
        )
        await receiver.wait_for("holds", 2)
        await asyncio.sleep(0.3)

    expired, spent = [verified(r, endpoint) for r in receiver.at("holds")]
    assert expired["type"] == "hold.expired"
    assert expired["data"] | {"hold_id": "hold_a", "released": 300, "lapsed": 0} == expired["data"]
    assert (expired["data"]["held"], expired["data"]["available"]) == (200, 800)
    assert spent["type"] == "credits.spent"  # a capture of nothing (hold_c) sends nothing
    assert spent["data"] | {"hold_id": "hold_b", "amount": 150, "reason": None} == spent["data"]
    assert (spent["data"]["balance"], spent["data"]["held"]) == (850, 0)


async def test_a_disabled_endpoint_gets_nothing_more(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    registry = EndpointRegistry(isolated_db.pool, allow_private=True)
    endpoint = await registry.create(receiver.url("gone"), ["credits.spent"])
    repository = isolated_db.ledger()
    account_id = await open_account(repository)
    receiver.failing.add("gone")

    async with notifier(isolated_db, schedule=(30,)):
        await act(repository, account_id, spend(1))
        await until(lambda: receiver.answered)
        await registry.disable(endpoint.id)
        await act(repository, account_id, spend(2))
        await asyncio.sleep(0.5)

    [delivery] = await list_deliveries(isolated_db.pool)
    assert delivery.status == "cancelled"
    assert [e.id for e in await registry.list()] == []
    assert len(receiver.answered) == 1


async def test_a_delivery_made_as_its_endpoint_is_disabled_is_cancelled_not_left_pending(
    isolated_db: IsolatedDatabase,
) -> None:
    registry = EndpointRegistry(isolated_db.pool, allow_private=True)
    endpoint = await registry.create("http://127.0.0.1:9/racing", ["credits.spent"])
    repository = isolated_db.ledger()
    account_id = await open_account(repository)
    await act(repository, account_id, spend(1))
    position = await isolated_db.store.head_position()
    # The projector is held between its read of the live endpoints and its insert of the
    # delivery (an uncommitted row with the same key, which that insert waits for), and the
    # endpoint is disabled meanwhile: the delivery commits after the disable cancelled the
    # endpoint's pending ones. Nothing claimed it, and it stayed pending for ever, the
    # oldest pending delivery (the "webhooks not delivered" alert) growing with it.
    blocker = await asyncpg.connect(isolated_db.url)
    holding = blocker.transaction()
    await holding.start()
    await blocker.execute(
        """INSERT INTO webhook_deliveries
               (notification_id, event_type, endpoint_id, account_id, position, payload)
           VALUES ($1, 'credits.spent', $2, $3, $4, '{}')""",
        f"evt_{position}_credits_spent",
        endpoint.id,
        account_id,
        position,
    )
    stop = asyncio.Event()
    projector = asyncio.create_task(Projector(isolated_db.store, isolated_db.url).run(stop))
    try:
        await until(
            lambda: blocker.fetchval(
                """SELECT count(*) > 0 FROM pg_stat_activity
                   WHERE datname = current_database() AND wait_event_type = 'Lock'"""
            ),
            what="the projector's insert waiting for the uncommitted delivery",
        )
        await registry.disable(endpoint.id)
        await holding.rollback()
        await until(
            lambda: blocker.fetchval(
                "SELECT position >= $1 FROM projection_positions WHERE name = 'notifications'",
                position,
            ),
            what="the notifications view applying the spend",
        )
    finally:
        stop.set()
        await projector
        await blocker.close()
    [made] = await list_deliveries(isolated_db.pool)
    assert made.status == "pending"  # the race happened as described

    assert await claim_due(isolated_db.pool, 10) == []

    [delivery] = await list_deliveries(isolated_db.pool)
    assert (delivery.status, delivery.attempts) == ("cancelled", 0)
    assert delivery.last_error == "endpoint disabled"


async def test_a_failed_delivery_is_listed_and_retried_by_hand_from_the_command_line(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    endpoint = await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        receiver.url("manual"), ["credits.spent"]
    )
    repository = isolated_db.ledger()
    account_id = await open_account(repository)
    receiver.failing.add("manual")

    async with notifier(isolated_db, schedule=(0.1, 0.1)):
        await act(repository, account_id, spend(7))
        await until(lambda: len(receiver.answered) >= 3)
        await asyncio.sleep(0.3)
        [delivery] = await list_deliveries(isolated_db.pool)
        assert (delivery.status, delivery.attempts) == ("failed", 3)

        listed = await ledger(isolated_db.url, "webhooks", "deliveries", "--status", "failed")
        assert listed.returncode == 0, listed.stderr
        assert f"dlv_{delivery.delivery_id}" in listed.stdout
        assert listed.stdout.count("HTTP 503") == 3  # every attempt is listed

        receiver.failing.clear()
        retried = await ledger(isolated_db.url, "webhooks", "retry", f"dlv_{delivery.delivery_id}")
        assert retried.returncode == 0, retried.stderr
        [got] = await receiver.wait_for("manual", 1)
        await asyncio.sleep(0.2)

    assert verified(got, endpoint)["data"]["amount"] == 7
    [delivery] = await list_deliveries(isolated_db.pool)
    assert (delivery.status, delivery.attempts) == ("delivered", 4)
    again = await ledger(isolated_db.url, "webhooks", "retry", str(delivery.delivery_id))
    assert again.returncode == 1
    assert "delivered already" in again.stderr
    delivered = await ledger(isolated_db.url, "webhooks", "deliveries", "--endpoint", endpoint.id)
    assert "delivered" in delivered.stdout


class CountingReceiver:
    """An HTTP receiver that counts the requests it gets and answers none until
    ``answer`` is set, then 200 to each."""

    def __init__(self) -> None:
        self.requests = 0
        self.answer = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        self.requests += 1
        await self.answer.wait()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()


async def test_a_retry_of_a_delivery_being_sent_is_refused_and_it_is_sent_once(
    isolated_db: IsolatedDatabase,
) -> None:
    """`ledger webhooks retry` made a delivery in flight due now: a dispatcher claimed it
    again and sent it a second time while the first request was still under way (the
    receiver dedupes by id, but it should not have to)."""
    counting = CountingReceiver()
    # A port of its own: a fixed one was taken by the other pass running this test (CI at
    # 94ca491).
    server = await asyncio.start_server(counting.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await EndpointRegistry(isolated_db.pool, allow_private=True).create(
            f"http://127.0.0.1:{port}/hooks", ["credits.spent"]
        )
        repository = isolated_db.ledger()
        account_id = await open_account(repository)
        async with notifier(isolated_db):
            await act(repository, account_id, spend(7))
            await until(lambda: counting.requests == 1)
            [delivery] = await list_deliveries(isolated_db.pool)

            retried = await ledger(
                isolated_db.url, "webhooks", "retry", f"dlv_{delivery.delivery_id}"
            )
            counting.answer.set()
            await until(
                lambda: _status(isolated_db.pool, delivery.delivery_id),
                what="the delivery recorded delivered",
            )
    finally:
        server.close()
        await server.wait_closed()

    assert counting.requests == 1
    [delivery] = await list_deliveries(isolated_db.pool)
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
    assert retried.returncode == 1
    assert "is being sent now (attempt 1): not sent twice" in retried.stderr
    assert len(retried.stderr.strip().splitlines()) == 1


async def test_a_retry_refused_for_a_dead_dispatchers_lease_says_when_and_what_then(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    """A dispatcher that died mid-request leaves its delivery claimed until the lease runs
    out. The refusal gave that time of day alone (UTC, no date) and "should its dispatcher
    have stopped": not how long that is from now, nor that a running dispatcher sends it
    again then by itself, so a user retried in a loop or waited for a retry not needed."""
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        receiver.url("dead"), ["credits.spent"]
    )
    repository = isolated_db.ledger()
    account_id = await open_account(repository)
    await act(repository, account_id, spend(5))
    stop = asyncio.Event()
    projector = asyncio.create_task(Projector(isolated_db.store, isolated_db.url).run(stop))
    await until(lambda: list_deliveries(isolated_db.pool))
    stop.set()
    await projector
    # A dispatcher claims it and dies before it can send or record (a lease of ten minutes,
    # as a long request timeout makes it: the command surely answers before it runs out).
    [claimed] = await claim_due(isolated_db.pool, 10, lease_seconds=600)
    [delivery] = await list_deliveries(isolated_db.pool)
    assert delivery.next_attempt_at is not None

    retried = await ledger(isolated_db.url, "webhooks", "retry", f"dlv_{claimed.delivery_id}")

    assert retried.returncode == 1
    [line] = retried.stderr.strip().splitlines()
    assert line.startswith(
        f"Error: dlv_{claimed.delivery_id} is being sent now (attempt 1): not sent twice; "
    )
    ends = f"{delivery.next_attempt_at:%H:%M:%SZ}"
    found = re.search(rf"its lease runs out at {ends}, in (\d+) s, should its dispatcher", line)
    assert found is not None, line
    assert 0 < int(found[1]) <= 600
    assert line.endswith(
        "have stopped: a dispatcher running then sends it again by itself, and this command "
        "takes it from then on)"
    )


async def _status(pool: asyncpg.Pool, delivery_id: int) -> bool:
    [delivery] = await list_deliveries(pool, delivery_id=delivery_id)
    return delivery.status == "delivered"


async def test_rebuilding_the_notifications_view_sends_nothing_twice(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        receiver.url("once"), ["credits.spent"]
    )
    repository = isolated_db.ledger()
    account_id = await open_account(repository)
    async with notifier(isolated_db):
        for amount in (1, 2, 3):
            await act(repository, account_id, spend(amount))
        await receiver.wait_for("once", 3)
        before = await isolated_db.pool.fetch("SELECT * FROM notifier_accounts")

        async with owner_connection(isolated_db.url) as connection:
            await rebuild(connection, NotificationsProjection(), lambda *_: None)
        await asyncio.sleep(0.5)

    assert len(await list_deliveries(isolated_db.pool)) == 3
    assert len(receiver.received) == 3
    assert await isolated_db.pool.fetch("SELECT * FROM notifier_accounts") == before


async def test_ledger_project_sends_notifications_and_stops_cleanly(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    endpoint = await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        receiver.url("cli"), ["credits.spent"]
    )
    repository = isolated_db.ledger()
    account_id = await open_account(repository)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api.cli",
        "project",
        env={**os.environ, "DATABASE_URL": isolated_db.url, "LEDGER_WEBHOOK_ALLOW_PRIVATE": "1"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await act(repository, account_id, spend(11))
        [got] = await receiver.wait_for("cli", 1, seconds=30)
    finally:
        process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)

    assert verified(got, endpoint)["data"]["amount"] == 11
    assert process.returncode == 0, stderr.decode()


async def test_ledger_project_connects_as_ledger_projector_and_projects_and_sends(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    """Given a URL that may set the database up (development, the tests), ``ledger project``
    connects as ledger_projector, which may not append nor make a token (ledger_service,
    which it took before, may both), and still folds every event and sends every delivery."""
    endpoint = await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        receiver.url("role"), ["credits.spent"]
    )
    repository = isolated_db.ledger()
    account_id = await open_account(repository)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api.cli",
        "project",
        env={**os.environ, "DATABASE_URL": isolated_db.url, "LEDGER_WEBHOOK_ALLOW_PRIVATE": "1"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await act(repository, account_id, spend(7))
        [got] = await receiver.wait_for("role", 1, seconds=30)
        head = await isolated_db.store.head_position()

        async def folded() -> bool:
            positions = await isolated_db.pool.fetch(
                "SELECT position FROM projection_positions WHERE name NOT LIKE 'relay:%'"
            )
            return bool(positions) and all(row[0] >= head for row in positions)

        await until(folded, seconds=30)
        roles = {
            row[0]
            for row in await isolated_db.pool.fetch(
                """SELECT usename FROM pg_stat_activity
                   WHERE datname = current_database() AND application_name = 'ledger'
                     AND pid <> pg_backend_pid() AND usename <> $1""",
                "ledger_service",
            )
        }
    finally:
        process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)

    assert verified(got, endpoint)["data"]["amount"] == 7
    assert roles == {"ledger_projector"}, stderr.decode()
    assert process.returncode == 0, stderr.decode()
    assert "never needs" not in stderr.decode()


async def test_ledger_project_given_the_service_role_still_runs_and_says_to_give_it_its_own(
    isolated_db: IsolatedDatabase,
) -> None:
    """A deployment whose projector has DATABASE_URL naming ledger_service (as compose's did)
    keeps projecting; the projector warns that the role may do what it never needs."""
    repository = isolated_db.ledger()
    account_id = await open_account(repository)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api.cli",
        "project",
        env={**os.environ, "DATABASE_URL": as_role(isolated_db.url, "ledger_service")},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await act(repository, account_id, spend(2))
        head = await isolated_db.store.head_position()

        async def folded() -> bool:
            position = await isolated_db.pool.fetchval(
                "SELECT position FROM projection_positions WHERE name = 'balances'"
            )
            return position is not None and position >= head

        await until(folded, seconds=30)
    finally:
        process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)

    said = stderr.decode()
    assert process.returncode == 0, said
    assert "projector: ledger_service may append events and make tokens, which a projector " in (
        said
    )
    assert "connect it as ledger_projector" in said


async def test_a_receivers_url_stays_out_of_the_projectors_log_even_at_debug(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    """A receiver's URL may hold its own secret (a token in the query, or the path itself):
    at -vv httpx logged every delivery's URL whole. The line stays, with the host alone."""
    secret_path, token = "hidden-path-2f9c", "token-in-the-query-77ab"
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        f"{receiver.url(secret_path)}?token={token}", ["credits.spent"]
    )
    repository = isolated_db.ledger()
    account_id = await open_account(repository)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api.cli",
        "-vv",
        "project",
        env={
            **os.environ,
            "DATABASE_URL": isolated_db.url,
            "LEDGER_WEBHOOK_ALLOW_PRIVATE": "1",
            "LEDGER_LOG_FORMAT": "json",
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await act(repository, account_id, spend(5))
        await receiver.wait_for(secret_path, 1, seconds=30)
    finally:
        process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)

    log = stderr.decode()
    port = receiver.base_url.rsplit(":", 1)[1]
    assert f'"HTTP Request: POST http://127.0.0.1:{port}/… \\"HTTP/1.1 200 OK\\""' in log, log
    assert secret_path not in log
    assert token not in log


async def test_an_unreachable_endpoint_has_its_attempts_recorded_with_the_error(
    isolated_db: IsolatedDatabase,
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        f"http://127.0.0.1:{port}/hooks", ["credits.spent"]
    )
    repository = isolated_db.ledger()
    account_id = await open_account(repository)

    async with notifier(isolated_db, schedule=(0.1,)):
        await act(repository, account_id, spend(3))
        await until(lambda: list_deliveries(isolated_db.pool, status="failed"), seconds=15)

    [delivery] = await list_deliveries(isolated_db.pool)
    assert [a.status_code for a in delivery.history] == [None, None]
    assert all("ConnectError" in (a.error or "") for a in delivery.history)
    assert delivery.last_error == delivery.history[-1].error


async def test_an_endpoint_stored_with_a_url_registration_refuses_is_not_sent_to(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    """An endpoint stored before its URL's host was checked at registration (or written past
    the registry) kept its deliveries: ``127.1``, no DNS name nor an IPv4 address as written,
    reached 127.0.0.1 (glibc's reading), where LEDGER_WEBHOOK_ALLOW_PRIVATE=1 lets it."""
    older = receiver.url("older").replace("127.0.0.1", "127.1")
    await isolated_db.pool.execute(
        """INSERT INTO webhook_endpoints (endpoint_id, url, event_types, secret)
           VALUES ('we_older', $1, '{credits.spent}', 'whsec_older')""",
        older,
    )
    repository = isolated_db.ledger()
    account_id = await open_account(repository)

    async with notifier(isolated_db):
        await act(repository, account_id, spend(3))
        await until(lambda: _settled(isolated_db.pool), seconds=15, what="the delivery settled")

    assert [r.path for r in receiver.received] == []
    [delivery] = await list_deliveries(isolated_db.pool)
    assert delivery.status == "failed"
    [attempt] = delivery.history  # failed at once: no retry can send it
    assert attempt.status_code is None
    assert attempt.error == delivery.last_error
    assert attempt.error == (
        "not sent: its host '127.1' is neither a DNS name (RFC 1123 labels) nor an IP address "
        "written in its usual form: registration refuses this URL, and no retry can send it "
        "(register it corrected and disable we_older)"
    )
    listed = await ledger(isolated_db.url, "webhooks", "deliveries", "--status", "failed")
    assert "not sent: its host '127.1'" in listed.stdout


async def test_a_dispatcher_names_at_its_start_the_endpoints_it_will_not_send_to(
    isolated_db: IsolatedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """Their deliveries failed at once with the reason recorded, and nothing else said so:
    the operator learnt of them from a receiver that heard nothing."""
    rows = [
        ("we_older", "http://127.1/hooks", False),
        ("we_hex", "http://0x7f.1:9/hooks", False),
        ("we_gone", "http://2130706433/hooks", True),  # disabled: nothing to say
        ("we_fine", "https://hooks.example.com/ledger", False),
    ]
    for endpoint_id, url, disabled in rows:
        await isolated_db.pool.execute(
            """INSERT INTO webhook_endpoints (endpoint_id, url, event_types, secret, disabled_at)
               VALUES ($1, $2, '{credits.spent}', 'whsec_never_logged',
                       CASE WHEN $3 THEN now() END)""",
            endpoint_id,
            url,
            disabled,
        )
    dispatcher = Dispatcher(isolated_db.pool, isolated_db.url, poll_seconds=0.01)
    stop = asyncio.Event()

    def said(level: int) -> list[str]:
        ours = [r for r in caplog.records if r.name == "ledger.notifications.dispatcher"]
        return [r.getMessage() for r in ours if r.levelno == level]

    with caplog.at_level(logging.INFO, logger="ledger.notifications.dispatcher"):
        running = asyncio.create_task(dispatcher.run(stop))
        try:
            await until(lambda: "webhook dispatcher started" in said(logging.INFO), seconds=10)
        finally:
            stop.set()
            await running

    why = "is neither a DNS name (RFC 1123 labels) nor an IP address written in its usual form"
    assert said(logging.WARNING) == [
        "webhook endpoints never sent to, their URLs refused by registration: "
        f"we_older (its host '127.1' {why}); we_hex (its host '0x7f.1' {why}); "
        "register each corrected and disable it (docs/notifications.md)"
    ]
    assert "whsec_never_logged" not in caplog.text


async def _settled(pool: asyncpg.Pool) -> bool:
    """Whether there are deliveries and each is delivered, failed or cancelled."""
    found = await list_deliveries(pool)
    return bool(found) and all(d.status != "pending" for d in found)


@asynccontextmanager
async def trickling_receiver() -> AsyncIterator[str]:
    """A receiver that answers ``/<status>`` with that status at once, then sends its body a
    byte every 0.2 s (no gap as long as a read's timeout) and hangs up after 8 s: its URL."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status = (await reader.readuntil(b"\r\n\r\n")).split(b" ")[1].lstrip(b"/")
        writer.write(b"HTTP/1.1 %s Nope\r\nContent-Length: 1000\r\n\r\n" % status)
        with contextlib.suppress(ConnectionError):
            for _ in range(40):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.2)
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_timeout(
    isolated_db: IsolatedDatabase,
) -> None:
    registry = EndpointRegistry(isolated_db.pool, allow_private=True)
    repository = isolated_db.ledger()
    account_id = await open_account(repository)

    async with trickling_receiver() as base_url:
        await registry.create(f"{base_url}/200", ["credits.spent"])
        await registry.create(f"{base_url}/503", ["credits.spent"])
        async with notifier(isolated_db, schedule=(0.1,), request_seconds=0.5):
            await act(repository, account_id, spend(3))
            await until(lambda: list_deliveries(isolated_db.pool, status="failed"), seconds=5)

    accepted, refused = sorted(await list_deliveries(isolated_db.pool), key=lambda d: d.url)
    assert (accepted.status, [a.status_code for a in accepted.history]) == ("delivered", [200])
    assert refused.status == "failed"
    assert [a.error for a in refused.history] == ["TimeoutError: no whole answer within 0.5 s"] * 2
    assert all(a.duration_ms < 1500 for a in refused.history)


async def _endless_body(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:  # 64 KiB every 50 ms, never the last chunk
        writer.write(b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)


async def _endless_head(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while True:  # a byte every 100 ms: each read is well within the timeout
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    ("answer", "status", "error"),
    [
        (_endless_body, 500, "HTTP 500: " + "x" * 200),
        (_endless_head, None, "TimeoutError: no whole answer within 1 s"),
    ],
    ids=["a refusal whose body never ends", "a head that never ends"],
)
async def test_a_receiver_that_never_finishes_its_answer_fails_the_attempt_in_the_timeout(
    isolated_db: IsolatedDatabase,
    answer: Callable[[asyncio.StreamWriter], Any],
    status: int | None,
    error: str,
) -> None:
    """The dispatcher read a refusal's body whole, and httpx's timeout counts each read
    alone: such a receiver held the attempt, and a slot of the dispatcher's, for ever (a
    security review)."""
    connections: list[asyncio.StreamWriter] = []

    async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await answer(writer)

    server = await asyncio.start_server(receive, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        f"http://127.0.0.1:{port}/hooks", ["credits.spent"]
    )
    repository = isolated_db.ledger()
    account_id = await open_account(repository)

    async with server, notifier(isolated_db, schedule=(0.1,), request_seconds=1.0):
        try:
            await act(repository, account_id, spend(3))
            await until(lambda: list_deliveries(isolated_db.pool, status="failed"), seconds=10)
        finally:
            for writer in connections:  # what the test left hanging, if it failed
                writer.close()

    [delivery] = await list_deliveries(isolated_db.pool)
    assert [(a.status_code, a.error) for a in delivery.history] == [(status, error)] * 2
    assert all(a.duration_ms < 3000 for a in delivery.history)


async def test_deliveries_to_one_receiver_share_its_connection(
    isolated_db: IsolatedDatabase,
) -> None:
    """A 2xx's body is read so the connection carries the next delivery: the first form of
    the timeout's fix left it unread, and every delivery opened a connection (and, to an
    https receiver, a TLS handshake) of its own."""
    connections: list[int] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nthank you!\r\n")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    registry = EndpointRegistry(isolated_db.pool, allow_private=True)
    repository = isolated_db.ledger()
    account_id = await open_account(repository)
    port = server.sockets[0].getsockname()[1]
    await registry.create(f"http://127.0.0.1:{port}/hooks", ["credits.spent"])
    try:
        async with notifier(isolated_db):
            for n in range(3):
                await act(repository, account_id, spend(3))
                await until(
                    lambda n=n: _delivered(isolated_db, n + 1),  # type: ignore[misc]
                    seconds=10,
                )
    finally:
        server.close()

    assert len(connections) == 1


async def _delivered(db: IsolatedDatabase, count: int) -> bool:
    return len(await list_deliveries(db.pool, status="delivered")) >= count


def test_the_default_retry_schedule_lasts_more_than_a_day() -> None:
    assert sum(DEFAULT_SCHEDULE) * (1 - JITTER) >= 24 * 3600


class CutOffOnce(Dispatcher):
    """A dispatcher whose first look at the outbox meets a connection PostgreSQL cut off
    mid-operation, as asyncpg reports it on the connection's next use after a restart."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.looks = 0

    async def _start_due(self, client: Any) -> int:
        self.looks += 1
        if self.looks == 1:
            raise asyncpg.InternalClientError("cannot switch to state 12; another operation (2)")
        return await super()._start_due(client)


async def test_a_dispatcher_whose_connection_was_cut_off_says_so_in_one_line_and_goes_on(
    isolated_db: IsolatedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = CutOffOnce(isolated_db.pool, isolated_db.url, poll_seconds=0.01)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="ledger.notifications.dispatcher"):
        running = asyncio.create_task(dispatcher.run(stop))
        try:
            async with asyncio.timeout(10):
                while dispatcher.looks < 3:  # noqa: ASYNC110 (a counter, no event)
                    await asyncio.sleep(0.01)
        finally:
            stop.set()
            await running

    line, recovered = [r for r in caplog.records if r.name == "ledger.notifications.dispatcher"]
    assert line.levelno == logging.WARNING
    assert line.getMessage() == (
        "dispatcher could not reach the outbox (will retry): "
        "cannot switch to state 12; another operation (2); "
        "said again every 10 minutes while it lasts"
    )
    assert line.exc_info is None
    assert recovered.getMessage().startswith("webhook dispatcher recovered: 1 try failed over ")


async def test_a_dispatcher_failing_every_second_says_so_once_and_when_it_recovers(
    isolated_db: IsolatedDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """Each look at the outbox (one a second) logged "dispatcher could not reach the outbox
    (will retry)" again for as long as the failure lasted, and nothing when it ended."""
    dispatcher = Dispatcher(isolated_db.pool, isolated_db.url, poll_seconds=0.01)
    stop = asyncio.Event()
    admin = await asyncpg.connect(isolated_db.url)

    def said(level: int) -> list[str]:
        ours = [r for r in caplog.records if r.name == "ledger.notifications.dispatcher"]
        return [r.getMessage() for r in ours if r.levelno == level]

    async def until(done: Callable[[], bool]) -> None:
        async with asyncio.timeout(30):
            while not done():  # noqa: ASYNC110 (caplog's list, no event)
                await asyncio.sleep(0.01)

    caplog.set_level(logging.DEBUG, logger="ledger.notifications.dispatcher")
    await admin.execute("ALTER TABLE webhook_deliveries RENAME TO webhook_deliveries_away")
    running = asyncio.create_task(dispatcher.run(stop))
    try:
        await until(lambda: len([m for m in said(logging.DEBUG) if "(will retry)" in m]) >= 3)
        await admin.execute("ALTER TABLE webhook_deliveries_away RENAME TO webhook_deliveries")
        await until(lambda: any("recovered" in m for m in said(logging.WARNING)))
    finally:
        stop.set()
        await running
        await admin.execute(
            "ALTER TABLE IF EXISTS webhook_deliveries_away RENAME TO webhook_deliveries"
        )
        await admin.close()

    failed, recovered = said(logging.WARNING)
    assert failed.startswith("dispatcher could not reach the outbox (will retry): "), failed
    assert '"webhook_deliveries" does not exist' in failed
    assert recovered.startswith("webhook dispatcher recovered: "), recovered
    assert " tries failed over " in recovered


async def test_a_notification_carries_the_balances_its_command_left_not_a_step_inside_it(
    isolated_db: IsolatedDatabase,
) -> None:
    """A payment that lands after its refund credits and claws back in one command: the
    account never held the credits, so ``credits.purchased`` does not say it did."""
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        "http://127.0.0.1:9/hooks", ["credits.purchased"]
    )
    repository = isolated_db.ledger()
    try:
        account_id = await open_account(repository, 100)
        await act(
            repository,
            account_id,
            lambda a: a.purchase(session_id="cs_refunded_first", credits=1000),
            lambda a: a.claw_back("cs_refunded_first", 1000),
        )
    finally:
        await repository.uow.committer.stop()
    await caught_up(isolated_db.store)

    payloads = await isolated_db.pool.fetch(
        "SELECT payload FROM webhook_deliveries WHERE account_id = $1", account_id
    )
    [data] = [msgspec.json.decode(row["payload"])["data"] for row in payloads]
    assert (data["credits"], data["session_id"]) == (1000, "cs_refunded_first")
    assert (data["balance"], data["available"], data["topup_balance"]) == (100, 100, 0)


async def test_a_delivery_that_fails_for_good_is_logged_as_a_warning(
    isolated_db: IsolatedDatabase, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Each attempt was an info line, the last one too: a notification given up on (an
    operator's `ledger webhooks retry` to send it) looked like any retry to come."""
    caplog.set_level(logging.INFO, logger="ledger.notifications.dispatcher")
    await EndpointRegistry(isolated_db.pool, allow_private=True).create(
        receiver.url("gone"), ["credits.spent"]
    )
    repository = isolated_db.ledger()
    account_id = await open_account(repository)
    receiver.failing.add("gone")

    def attempts() -> list[logging.LogRecord]:
        return [r for r in caplog.records if " attempt " in r.getMessage()]

    async with notifier(isolated_db, schedule=(0.1,)):
        await act(repository, account_id, spend(3))
        await until(lambda: len(attempts()) >= 2)

    retried, given_up = attempts()
    assert ": pending (HTTP 503" in retried.getMessage()
    assert retried.levelno == logging.INFO
    assert ": failed (HTTP 503" in given_up.getMessage()
    assert given_up.levelno == logging.WARNING


@asynccontextmanager
async def hanging_receiver() -> AsyncIterator[tuple[str, list[asyncio.StreamWriter]]]:
    """A receiver that accepts each connection and never answers, until the block ends: its
    URL, and the connections it holds."""
    held: list[asyncio.StreamWriter] = []
    released = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await released.wait()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hooks", held
    finally:
        released.set()
        server.close()


async def test_a_receiver_that_never_answers_holds_only_its_share_of_the_slots(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    """Deliveries were claimed oldest first whatever their endpoint: a receiver that took
    the connection and never answered came to hold all 16 of a dispatcher's slots, for the
    request's timeout each, and a healthy receiver heard of 15 spends in 10 s (a review)."""
    registry = EndpointRegistry(isolated_db.pool, allow_private=True)
    repository = isolated_db.ledger()
    account_id = await open_account(repository, 10_000)
    spends = 3 * CONCURRENCY

    # The receiver lets go of its connections first, so that the dispatcher can stop.
    async with notifier(isolated_db, request_seconds=600), hanging_receiver() as (url, held):
        dead = await registry.create(url, ["credits.spent"])
        await registry.create(receiver.url("healthy"), ["credits.spent"])
        for amount in range(1, spends + 1):
            await act(repository, account_id, spend(amount))
        await until(
            lambda: len(receiver.at("healthy")) == spends,
            seconds=60,
            what="every notification at the healthy receiver",
        )
        await until(lambda: len(held) == PER_ENDPOINT, what="the dead one's requests")
        still_held = [w for w in held if not w.is_closing()]
        dead_deliveries = await list_deliveries(isolated_db.pool, endpoint_id=dead.id, limit=spends)

    assert len(still_held) == PER_ENDPOINT  # hanging all along, and no more sent to it
    assert len(dead_deliveries) == spends
    assert {d.status for d in dead_deliveries} == {"pending"}
    assert (
        sorted(d.attempts for d in dead_deliveries)
        == [0] * (spends - PER_ENDPOINT) + [1] * PER_ENDPOINT
    )
    assert await _delivered(isolated_db, spends)


async def test_a_claim_takes_an_endpoints_oldest_only_up_to_its_share(
    isolated_db: IsolatedDatabase,
) -> None:
    """What the dispatcher has in flight to an endpoint counts against its share; a disabled
    endpoint's due deliveries are cancelled, all of them."""
    registry = EndpointRegistry(isolated_db.pool, allow_private=True)
    busy, other, gone = [
        await registry.create(f"http://127.0.0.1:9/{name}", ["credits.spent"])
        for name in ("busy", "other", "gone")
    ]
    # Due oldest first: busy's six, then gone's two and other's three, in turns.
    for n, endpoint in enumerate([busy] * 6 + [gone, other] * 2 + [other]):
        await isolated_db.pool.execute(
            """INSERT INTO webhook_deliveries (notification_id, event_type, endpoint_id,
                   account_id, position, payload, next_attempt_at)
               VALUES ($1, 'credits.spent', $2, 'acct', $3, '{}',
                       clock_timestamp() - make_interval(secs => $4))""",
            f"evt_{n}_credits_spent",
            endpoint.id,
            n,
            100.0 - n,
        )
    await registry.disable(gone.id)
    await isolated_db.pool.execute(
        "UPDATE webhook_deliveries SET status = 'pending' WHERE endpoint_id = $1", gone.id
    )  # as if made as it was disabled: cancelled when due, whatever the share

    claimed = await claim_due(isolated_db.pool, 16, per_endpoint=4, sending={busy.id: 1})

    claimed.sort(key=lambda d: d.delivery_id)
    assert [(d.endpoint_id, d.notification_id) for d in claimed] == [
        (busy.id, "evt_0_credits_spent"),
        (busy.id, "evt_1_credits_spent"),
        (busy.id, "evt_2_credits_spent"),
        (other.id, "evt_7_credits_spent"),
        (other.id, "evt_9_credits_spent"),
        (other.id, "evt_10_credits_spent"),
    ]
    cancelled = await list_deliveries(isolated_db.pool, endpoint_id=gone.id)
    assert [d.status for d in cancelled] == ["cancelled", "cancelled"]
    # busy at its share: its three left are passed over, not in the way of another's.
    assert await claim_due(isolated_db.pool, 16, per_endpoint=4, sending={busy.id: 4}) == []
    rest = await claim_due(isolated_db.pool, 16, per_endpoint=4, sending={busy.id: 3})
    assert [d.notification_id for d in rest] == ["evt_3_credits_spent"]


async def test_four_receivers_that_never_answer_leave_room_for_one_that_does(
    isolated_db: IsolatedDatabase, receiver: Receiver
) -> None:
    """With 4 of 16 slots per endpoint, four receivers that took the connection and never
    answered held all 16 of a dispatcher's slots until the timeout, and a healthy receiver
    heard nothing meanwhile (a review). A request unanswered for ``STALLED_SECONDS`` now
    gives its slot back; it still counts against its endpoint's share."""
    registry = EndpointRegistry(isolated_db.pool, allow_private=True)
    repository = isolated_db.ledger()
    account_id = await open_account(repository, 10_000)
    spends = 3 * CONCURRENCY
    hanging = 4

    async with contextlib.AsyncExitStack() as stack:
        # The receivers let go of their connections first, so that the dispatcher can stop.
        await stack.enter_async_context(notifier(isolated_db, request_seconds=600))
        receivers = [await stack.enter_async_context(hanging_receiver()) for _ in range(hanging)]
        dead = [await registry.create(url, ["credits.spent"]) for url, _ in receivers]
        await registry.create(receiver.url("healthy"), ["credits.spent"])
        for amount in range(1, spends + 1):
            await act(repository, account_id, spend(amount))
        await until(
            lambda: len(receiver.at("healthy")) == spends,
            seconds=60,
            what="every notification at the healthy receiver while four hang",
        )
        held = [[w for w in writers if not w.is_closing()] for _, writers in receivers]
        dead_deliveries = [
            await list_deliveries(isolated_db.pool, endpoint_id=d.id, limit=spends) for d in dead
        ]

    assert [len(h) for h in held] == [PER_ENDPOINT] * hanging  # no more sent to any of them
    for deliveries in dead_deliveries:
        assert {d.status for d in deliveries} == {"pending"}
        assert (
            sorted(d.attempts for d in deliveries)
            == [0] * (spends - PER_ENDPOINT) + [1] * PER_ENDPOINT
        )
    assert len({r.json["id"] for r in receiver.at("healthy")}) == spends
