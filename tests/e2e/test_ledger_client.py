"""The Python client (clients/python) against the served API, beyond spends, holds and grants.

A lost answer retried under the same key, the customers' calls, webhook endpoints and
thresholds, a replayed balance, and a real delivery verified and parsed by the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from ledger_client import (
    ConnectionFailed,
    CreditsSpentNotification,
    InsufficientCredits,
    LedgerClient,
    LowBalanceNotification,
    NotFound,
    Unauthorized,
    ValidationError,
    construct_notification,
)
from litestar import Litestar

from api.access.tokens import Scope
from api.services import Services
from bench import service as bench
from ledger.domain.ids import account_stream_id
from ledger.notifications.dispatcher import Dispatcher
from projections.runner import Projector
from tests.conftest import unique
from tests.e2e.conftest import Connect, Customer
from tests.e2e.test_spending_api import open_account, spent_events
from tests.support.events import caught_up, stream_events
from tests.support.webhook_receiver import Receiver, webhook_receiver


class LosesFirstAnswer(httpx.AsyncBaseTransport):
    """Real HTTP, except that the first answer to a POST never reaches the caller."""

    def __init__(self) -> None:
        self.network = httpx.AsyncHTTPTransport()
        self.keys: list[str | None] = []
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.network.handle_async_request(request)
        if request.method != "POST":
            return response
        self.keys.append(request.headers.get("Idempotency-Key"))
        if self.lost:
            return response
        await response.aread()  # the service has answered: it recorded the spend
        await response.aclose()
        self.lost += 1
        raise httpx.ReadError("connection reset before the answer arrived")

    async def aclose(self) -> None:
        await self.network.aclose()


async def test_a_spend_whose_answer_was_lost_is_sent_again_and_recorded_once(
    connect: Connect, writer: LedgerClient, services: Services
) -> None:
    account_id = await open_account(writer, 100)
    token = await services.tokens.issue(Scope.LEDGER_WRITE, name="retrying")
    lossy = LosesFirstAnswer()
    retrying = connect(token.secret, transport=lossy, retries=2, backoff=0.01)

    spent = await retrying.spend(account_id, 30, reason="render")

    assert spent.balance == 70
    assert lossy.lost == 1
    assert len(lossy.keys) == 2
    assert lossy.keys[0] == lossy.keys[1] is not None
    assert len(await spent_events(services, account_id)) == 1


async def test_a_spend_whose_answer_was_lost_is_recorded_once_when_sent_again_with_its_key(
    connect: Connect, writer: LedgerClient, services: Services
) -> None:
    """The caller gave no key: the one the client made comes with the error, so that the
    caller can send the spend again once the client's own retries are spent."""
    account_id = await open_account(writer, 100)
    token = await services.tokens.issue(Scope.LEDGER_WRITE, name="caller-retries")
    lossy = LosesFirstAnswer()
    caller = connect(token.secret, transport=lossy, retries=0)

    with pytest.raises(ConnectionFailed) as lost:
        await caller.spend(account_id, 30, reason="render")
    spent = await caller.spend(
        account_id, 30, reason="render", idempotency_key=lost.value.idempotency_key
    )

    assert lost.value.idempotency_key is not None
    assert lossy.keys == [lost.value.idempotency_key] * 2
    assert spent.balance == 70
    assert len(await spent_events(services, account_id)) == 1


async def test_a_capture_whose_answer_was_lost_is_sent_again_keyless_and_settles_once(
    connect: Connect, writer: LedgerClient, services: Services
) -> None:
    account_id = await open_account(writer, 1000)
    hold = await writer.place_hold(account_id, 300)
    token = await services.tokens.issue(Scope.LEDGER_WRITE, name="capturing")
    lossy = LosesFirstAnswer()
    retrying = connect(token.secret, transport=lossy, retries=2, backoff=0.01)

    captured = await retrying.capture_hold(account_id, hold.hold_id, 250)

    assert (lossy.lost, lossy.keys) == (1, [None, None])
    assert (captured.status, captured.captured, captured.balance) == ("captured", 250, 750)
    events = await stream_events(services.store, account_stream_id(account_id))
    assert [kind for kind, _ in events].count("HoldCaptured") == 1


class Recording(httpx.AsyncBaseTransport):
    """Real HTTP, keeping each request and the headers of its answer."""

    def __init__(self) -> None:
        self.network = httpx.AsyncHTTPTransport()
        self.sent: list[httpx.Request] = []
        self.answered: list[httpx.Headers] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.network.handle_async_request(request)
        self.sent.append(request)
        self.answered.append(response.headers)
        return response

    async def aclose(self) -> None:
        await self.network.aclose()


async def test_a_read_asks_for_the_position_of_the_clients_last_write(
    connect: Connect, writer: LedgerClient, services: Services
) -> None:
    """Where reads go to a standby, only Ledger-Min-Position shows a read its own write
    (docs/scaling.md): the client keeps the position its answers carry and sends it."""
    account_id = await open_account(writer, 100)
    token = await services.tokens.issue(Scope.LEDGER_WRITE, name="reading-back")
    recording = Recording()
    ledger = connect(token.secret, transport=recording)

    await ledger.spend(account_id, 30)
    written = ledger.position
    with pytest.raises(InsufficientCredits):  # wrote nothing: no position
        await ledger.spend(account_id, 1000)
    credits = await ledger.get_credits(account_id, min_position=ledger.position)

    assert written == await services.store.last_position(account_stream_id(account_id))
    assert ledger.position == written
    assert recording.sent[-1].headers["Ledger-Min-Position"] == str(written)
    assert recording.answered[-1]["Ledger-Read-From"] == "primary"
    assert credits.balance == 70


async def test_customers_buy_and_read_their_own_credits(
    connect: Connect, customer: Customer
) -> None:
    me = connect(customer.token)

    started = await me.purchase_credits(1000, idempotency_key="buy-1")
    again = await me.purchase_credits(1000, idempotency_key="buy-1")
    credits = await me.get_my_credits()
    with pytest.raises(ValidationError) as too_few:
        await me.purchase_credits(99)
    with pytest.raises(Unauthorized) as unknown:
        await connect("not-a-token").get_my_credits()

    assert started.session_id.startswith("cs_")
    assert again == started
    assert (credits.account_id, credits.balance) == (customer.account_id, 1000)
    assert too_few.value.errors == {"credits": ["The credits must be at least 100."]}
    assert unknown.value.status == 401


async def test_a_balance_as_it_stood_is_replayed(writer: LedgerClient, services: Services) -> None:
    account_id = await open_account(writer, 100)
    await caught_up(services.store)
    before = datetime.now(UTC)
    await writer.spend(account_id, 40)

    then = await writer.get_credits(account_id, as_of=before)
    await caught_up(services.store)  # the answer without as_of is the projected view's
    now = await writer.get_credits(account_id)

    assert (then.balance, now.balance) == (100, 60)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with webhook_receiver() as running:
        yield running


async def test_endpoints_thresholds_and_a_delivery_verified_by_the_client(
    writer: LedgerClient, customer: Customer, services: Services, receiver: Receiver
) -> None:
    endpoint = await writer.create_webhook_endpoint(
        receiver.url("client"), ["credits.spent", "credits.low_balance"]
    )
    try:
        threshold = await writer.set_low_balance_threshold(customer.account_id, 500)
        listed = await writer.list_webhook_endpoints()
        stop = asyncio.Event()
        running = [
            asyncio.create_task(Projector(services.store, services.database_url).run(stop)),
            asyncio.create_task(
                Dispatcher(services.pool, services.database_url, allow_private=True).run(stop)
            ),
        ]
        try:
            await writer.spend(customer.account_id, 600, reason="e2e")
            got = await receiver.wait_for("client", 2, seconds=30)
        finally:
            stop.set()
            await asyncio.gather(*running)
    finally:
        disabled = await writer.delete_webhook_endpoint(endpoint.id)

    assert endpoint.secret.startswith("whsec_")
    assert (threshold.threshold, threshold.effective_threshold) == (500, 500)
    assert endpoint.id in [e.id for e in listed.data]
    assert disabled.disabled is not None
    assert endpoint.id not in [e.id for e in (await writer.list_webhook_endpoints()).data]
    with pytest.raises(NotFound):
        await writer.delete_webhook_endpoint("we_nope")
    notifications = []
    for received in got:
        assert received.signature is not None
        notifications.append(
            construct_notification(received.body.encode(), received.signature, endpoint.secret)
        )
    spent, low = [
        n
        for n in notifications
        if isinstance(n, CreditsSpentNotification | LowBalanceNotification)
        and n.data.account_id == customer.account_id
    ]
    assert isinstance(spent, CreditsSpentNotification)
    assert (spent.data.amount, spent.data.reason, spent.data.available) == (600, "e2e", 400)
    assert isinstance(low, LowBalanceNotification)
    assert (low.data.available, low.data.low_balance_threshold) == (400, 500)


async def test_the_bench_sets_up_accounts_history_and_grants_through_the_client(
    ledger_app: Litestar, writer: LedgerClient, services: Services
) -> None:
    url = ledger_app.state.base_url
    token = (await services.tokens.issue(Scope.LEDGER_WRITE, name="bench")).secret
    accounts = [unique("acct_bench") for _ in range(3)]
    await writer.open_account(accounts[0], monthly_allowance=1000)  # there already

    opened = await bench.open_accounts(url, token, accounts, allowance=100, concurrency=2)
    await bench.spend_each(url, token, accounts, 2, concurrency=2)
    await bench.spend_each(url, token, accounts, 2, concurrency=2)  # the same keys: no more
    await bench.grant_each(url, token, accounts[1:], 3, concurrency=2)

    assert opened == 2
    await caught_up(services.store)
    balances = [await writer.get_credits(account_id) for account_id in accounts]
    assert [(c.allowance_remaining, c.granted) for c in balances] == [
        (998, 0),
        (98, 3_000_000),
        (98, 3_000_000),
    ]
