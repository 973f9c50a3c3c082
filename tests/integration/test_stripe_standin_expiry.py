"""Sessions expire on their own, as Stripe's do, with one signed ``checkout.session.expired``.

Stripe's shortest ``expires_at`` is 30 minutes; these stand-ins are started with
``min_expiry_seconds=0`` and a short check interval so that a session can expire in 2 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import stripe

from stripe_standin import RunningStandin, run_standin
from tests.support.standin import SECRET, Receiver, stripe_client, stripe_receiver, top_up, verify

CHECK_SECONDS = 0.05


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    async with stripe_receiver() as recorder:
        yield recorder


@pytest.fixture(scope="module")
async def standin(receiver: Receiver) -> AsyncIterator[RunningStandin]:
    async with run_standin(
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        min_expiry_seconds=0,
        expiry_check_seconds=CHECK_SECONDS,
    ) as running:
        yield running


@pytest.fixture
async def client(standin: RunningStandin) -> AsyncIterator[stripe.StripeClient]:
    async with stripe_client(standin.base_url) as sdk:
        yield sdk


def soon(seconds: int = 2) -> int:
    return int(time.time()) + seconds


def expired_events(receiver: Receiver, session_id: str) -> list[stripe.Event]:
    return [verify(item) for item in receiver.about(session_id, "checkout.session.expired")]


async def test_an_open_session_expires_on_its_own_with_one_signed_event(
    standin: RunningStandin, client: stripe.StripeClient, receiver: Receiver
) -> None:
    session = await client.v1.checkout.sessions.create_async(params=top_up(expires_at=soon()))
    assert session.status == "open"

    await receiver.wait_for(lambda: bool(expired_events(receiver, session.id)), what="expiry")
    await asyncio.sleep(10 * CHECK_SECONDS)  # several more passes of the sweeper

    [event] = expired_events(receiver, session.id)
    assert (event.data.object.status, event.data.object.url) == ("expired", None)
    assert event.data.object.expires_at == session.expires_at
    assert event.created >= session.expires_at
    fetched = await client.v1.checkout.sessions.retrieve_async(session.id)
    assert (fetched.status, fetched.payment_status, fetched.url) == ("expired", "unpaid", None)
    async with httpx.AsyncClient() as http:
        refused = await http.post(f"{session.url}/pay")
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "This Checkout Session is expired, not open."
    recorded = [e for e in standin.state.webhooks.events.values() if session.id in str(e.body)]
    assert [e.type for e in recorded] == ["checkout.session.expired"]


async def test_paid_and_expired_sessions_are_left_alone_when_their_time_comes(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    paid = await client.v1.checkout.sessions.create_async(params=top_up(expires_at=soon()))
    expired = await client.v1.checkout.sessions.create_async(params=top_up(expires_at=soon()))
    waiting = await client.v1.checkout.sessions.create_async(params=top_up(expires_at=soon()))
    async with httpx.AsyncClient() as http:
        assert (await http.post(f"{paid.url}/pay")).status_code == 200
        assert (await http.post(f"{expired.url}/expire")).status_code == 200

    await receiver.wait_for(lambda: bool(expired_events(receiver, waiting.id)), what="expiry")
    await asyncio.sleep(10 * CHECK_SECONDS)

    assert expired_events(receiver, paid.id) == []
    assert len(expired_events(receiver, expired.id)) == 1  # the button's, not a second one
    fetched = await client.v1.checkout.sessions.retrieve_async(paid.id)
    assert (fetched.status, fetched.payment_status) == ("complete", "paid")


async def test_a_read_after_expires_at_expires_the_session_with_its_event(
    receiver: Receiver,
) -> None:
    # The sweeper's next pass is a minute away: the retrieve finds the session due first.
    async with (
        run_standin(
            webhook_url=receiver.url,
            webhook_secret=SECRET,
            min_expiry_seconds=0,
            expiry_check_seconds=60,
        ) as standin,
        stripe_client(standin.base_url) as client,
    ):
        session = await client.v1.checkout.sessions.create_async(params=top_up(expires_at=soon()))
        await asyncio.sleep(max(session.expires_at - time.time(), 0) + 0.1)

        fetched = await client.v1.checkout.sessions.retrieve_async(session.id)
        await receiver.wait_for(lambda: bool(expired_events(receiver, session.id)), what="expiry")
        again = await client.v1.checkout.sessions.retrieve_async(session.id)

    assert (fetched.status, again.status) == ("expired", "expired")
    assert len(expired_events(receiver, session.id)) == 1


async def test_stripes_30_minute_minimum_holds_unless_a_test_lowers_it(
    client: stripe.StripeClient,
) -> None:
    async with run_standin() as default, stripe_client(default.base_url) as stripe_like:
        with pytest.raises(stripe.InvalidRequestError) as caught:
            await stripe_like.v1.checkout.sessions.create_async(params=top_up(expires_at=soon(60)))
    assert caught.value.param == "expires_at"
    assert caught.value.user_message == (
        "The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation."
    )

    with pytest.raises(stripe.InvalidRequestError) as past:
        await client.v1.checkout.sessions.create_async(params=top_up(expires_at=soon(-10)))
    assert past.value.param == "expires_at"
    accepted = await client.v1.checkout.sessions.create_async(params=top_up(expires_at=soon(60)))
    assert accepted.status == "open"


async def test_expiry_is_sent_once_across_restarts(receiver: Receiver, tmp_path: Path) -> None:
    state_file = tmp_path / "standin.json"

    def standin() -> RunningStandin:
        return run_standin(
            webhook_url=receiver.url,
            webhook_secret=SECRET,
            state_file=state_file,
            min_expiry_seconds=0,
            expiry_check_seconds=CHECK_SECONDS,
        )

    async with standin() as first, stripe_client(first.base_url) as client:
        session = await client.v1.checkout.sessions.create_async(params=top_up(expires_at=soon()))
    # Stopped while the session was open; it comes due while no stand-in runs.
    await asyncio.sleep(max(session.expires_at - time.time(), 0) + 0.1)
    assert expired_events(receiver, session.id) == []

    async with standin():
        await receiver.wait_for(lambda: bool(expired_events(receiver, session.id)), what="expiry")
    async with standin() as third, stripe_client(third.base_url) as client:
        await asyncio.sleep(10 * CHECK_SECONDS)
        fetched = await client.v1.checkout.sessions.retrieve_async(session.id)

    assert fetched.status == "expired"
    assert len(expired_events(receiver, session.id)) == 1
