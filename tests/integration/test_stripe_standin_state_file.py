"""The stand-in's state file: what ``make run`` keeps across restarts of the stand-in.

Each test starts a stand-in on a file, stops it, and starts another on the same file (on a
new port), then uses what the first one made with the real SDK and over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.development import start_stripe_standin
from api.settings import Settings
from stripe_standin import StandinState, run_standin
from stripe_standin.persistence import StateFileError, read_state_file, restore
from tests.support.standin import SECRET, Receiver, stripe_client, stripe_receiver, top_up, verify


async def test_a_restarted_standin_keeps_its_sessions_and_idempotent_answers(
    tmp_path: Path,
) -> None:
    state_file = tmp_path / "standin.json"
    options: Any = {"idempotency_key": "restart-key"}
    async with stripe_receiver() as receiver:
        async with (
            run_standin(
                webhook_url=receiver.url, webhook_secret=SECRET, state_file=state_file
            ) as first,
            stripe_client(first.base_url) as client,
        ):
            created = await client.v1.checkout.sessions.create_async(
                params=top_up(1500), options=options
            )

        # No webhook endpoint given: the second run delivers where the first one did.
        async with (
            run_standin(state_file=state_file) as second,
            stripe_client(second.base_url) as client,
            httpx.AsyncClient() as http,
        ):
            fetched = await client.v1.checkout.sessions.retrieve_async(created.id)
            again = await client.v1.checkout.sessions.create_async(
                params=top_up(1500), options=options
            )
            page = await http.get(str(fetched.url))
            paid = await http.post(f"{fetched.url}/pay")

    assert (fetched.status, fetched.amount_total) == ("open", 1500)
    # A new port: the hosted page moved with the stand-in, in replays too.
    assert fetched.url == f"{second.base_url}/c/pay/{created.id}"
    assert again.id == created.id
    assert again.url == fetched.url
    assert again.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert page.status_code == 200
    assert "1500 credits" in page.text
    assert paid.status_code == 200, paid.text
    [event_id] = paid.json()["delivered"]
    [item] = receiver.bodies_for(event_id)
    event = verify(item)
    assert (event.type, event.data.object.id, event.data.object.payment_status) == (
        "checkout.session.completed",
        created.id,
        "paid",
    )


async def test_payments_refunds_disputes_and_events_survive_a_restart(tmp_path: Path) -> None:
    state_file = tmp_path / "standin.json"
    async with stripe_receiver() as receiver:
        async with (
            run_standin(
                webhook_url=receiver.url, webhook_secret=SECRET, state_file=state_file
            ) as first,
            stripe_client(first.base_url) as client,
            httpx.AsyncClient(base_url=first.base_url) as http,
        ):
            session = await client.v1.checkout.sessions.create_async(params=top_up(1000))
            paid = (await http.post(f"/c/pay/{session.id}/pay")).json()
            intent = paid["session"]["payment_intent"]
            refund = await client.v1.refunds.create_async(
                params={"payment_intent": intent, "amount": 300}
            )
            charge_id = str(refund.charge)
            opened = (await http.post(f"/_standin/charges/{charge_id}/dispute")).json()
            events_before = (await http.get("/_standin/events")).json()["data"]

        async with (
            run_standin(state_file=state_file) as second,
            stripe_client(second.base_url) as client,
            httpx.AsyncClient(base_url=second.base_url) as http,
        ):
            charge = await client.v1.charges.retrieve_async(charge_id)
            kept_refund = await client.v1.refunds.retrieve_async(refund.id)
            dispute = await client.v1.disputes.retrieve_async(opened["dispute"]["id"])
            events_after = (await http.get("/_standin/events")).json()["data"]
            [completed_id] = paid["delivered"]
            resent = (await http.post(f"/_standin/events/{completed_id}/resend")).json()
            closed = await http.post(
                f"/_standin/disputes/{dispute.id}/close", json={"status": "won"}
            )

    assert (charge.amount_refunded, charge.disputed, charge.dispute) == (300, True, dispute.id)
    assert (kept_refund.amount, kept_refund.payment_intent) == (300, intent)
    assert (dispute.amount, dispute.status) == (700, "needs_response")
    assert events_after == events_before
    # An event re-sent after the restart is the same bytes as its first delivery.
    assert resent == {"status": 200, "error": None}
    first_delivery, second_delivery = receiver.bodies_for(completed_id)
    assert first_delivery.body == second_delivery.body
    assert closed.status_code == 200, closed.text
    assert [item.type for item in receiver.about(dispute.id)] == [
        "charge.dispute.created",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.closed",
        "charge.dispute.funds_reinstated",
    ]


async def test_the_state_file_is_written_whole_and_private(tmp_path: Path) -> None:
    state_file = tmp_path / "data" / "standin.json"
    async with (
        run_standin(state_file=state_file) as standin,
        stripe_client(standin.base_url) as client,
    ):
        assert state_file.exists()  # written at start, before any change
        session = await client.v1.checkout.sessions.create_async(params=top_up())
        stored = json.loads(state_file.read_bytes())

    assert stored["format"] == 1
    assert [s["data"]["id"] for s in stored["sessions"]] == [session.id]
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600  # it holds the signing secret
    assert [p.name for p in state_file.parent.iterdir()] == ["standin.json"]  # no temp files


async def test_an_unreadable_state_file_stops_the_start(tmp_path: Path) -> None:
    state_file = tmp_path / "standin.json"
    state_file.write_text('{"format": 1, "sessions": "not a list"}')

    with pytest.raises(StateFileError, match="not a stand-in state file"):
        async with run_standin(state_file=state_file):
            pass

    state_file.write_text('{"format": 99}')
    with pytest.raises(StateFileError, match="format 99"):
        async with run_standin(state_file=state_file):
            pass


async def test_a_delivery_cut_short_by_a_stop_is_resumed_after_the_restart(
    tmp_path: Path,
) -> None:
    state_file = tmp_path / "standin.json"
    async with stripe_receiver() as receiver:
        receiver.fail_count = 1  # the first attempt fails; the retry would come after the stop
        async with (
            run_standin(
                webhook_url=receiver.url,
                webhook_secret=SECRET,
                webhook_retry_delays=(30.0,),
                state_file=state_file,
            ) as first,
            stripe_client(first.base_url) as client,
            httpx.AsyncClient(base_url=first.base_url) as http,
        ):
            session = await client.v1.checkout.sessions.create_async(params=top_up())
            [event_id] = (await http.post(f"/c/pay/{session.id}/pay")).json()["delivered"]
            assert list(first.state.webhooks.pending) == [event_id]

        async with run_standin(state_file=state_file) as second:
            await _delivered(receiver, event_id, 2)
            # The receiver has it; the stand-in records the answer a moment later.
            async with asyncio.timeout(5):
                while second.state.webhooks.pending:  # noqa: ASYNC110 (a plain dict, no event)
                    await asyncio.sleep(0.01)
            attempts = [(a.attempt, a.status) for a in second.state.webhooks.attempts]

    assert attempts == [(1, 500), (2, 200)]
    assert verify(receiver.bodies_for(event_id)[-1]).type == "checkout.session.completed"


async def _delivered(receiver: Receiver, event_id: str, times: int) -> None:
    await receiver.wait_for(
        lambda: len(receiver.bodies_for(event_id)) >= times, what=f"{times} deliveries"
    )


async def test_development_keeps_the_standins_state_under_the_data_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, stripe_standin_port=0, public_url="http://127.0.0.1:9")
    async with start_stripe_standin(settings) as base_url, stripe_client(base_url) as client:
        session = await client.v1.checkout.sessions.create_async(
            params=top_up(), options={"idempotency_key": "dev-key"}
        )

    assert (tmp_path / "stripe-standin.json").exists()
    async with start_stripe_standin(settings) as base_url, stripe_client(base_url) as client:
        again = await client.v1.checkout.sessions.create_async(
            params=top_up(), options={"idempotency_key": "dev-key"}
        )
        fetched = await client.v1.checkout.sessions.retrieve_async(session.id)

    assert again.id == session.id
    assert (fetched.status, fetched.url) == ("open", f"{base_url}/c/pay/{session.id}")


async def test_loading_forgets_what_stripe_forgets(tmp_path: Path) -> None:
    state_file = tmp_path / "standin.json"
    async with (
        run_standin(state_file=state_file) as standin,
        stripe_client(standin.base_url) as client,
        httpx.AsyncClient(base_url=standin.base_url) as http,
    ):
        session = await client.v1.checkout.sessions.create_async(
            params=top_up(), options={"idempotency_key": "old-key"}
        )
        await http.post(f"/c/pay/{session.id}/pay")

    def loaded(days_later: float) -> StandinState:
        state = StandinState(public_base_url=standin.base_url)
        fresh = read_state_file(state_file)  # restore() takes the file's objects over
        assert fresh is not None
        restore(state, fresh, now=int(time.time() + days_later * 86400))
        return state

    next_day, next_month = loaded(1.01), loaded(31)
    assert (len(loaded(0.9).idempotency), len(next_day.idempotency)) == (1, 0)  # keys: 24 hours
    assert len(next_day.webhooks.events) == 1
    assert len(next_month.webhooks.events) == 0  # events: 30 days
    assert next_month.webhooks.attempts == []
    assert list(next_month.sessions) == [session.id]  # objects stay, as at Stripe
