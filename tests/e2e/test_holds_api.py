"""Holds over HTTP: reserve, capture, release, expire, idempotency and concurrency.

Normal calls go through the Python client (clients/python), as internal services
make them; what the client cannot send (no key, no token, a bad body) stays raw httpx.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from ledger_client import (
    Conflict,
    Forbidden,
    Hold,
    InsufficientCredits,
    LedgerClient,
    NotFound,
    Spent,
    ValidationError,
)

from api.expiry import ExpirySweeper
from api.services import Services
from ledger.domain.ids import account_stream_id
from tests.e2e.conftest import Connect, Customer
from tests.e2e.test_spending_api import open_account
from tests.support.events import caught_up, stream_events


async def test_a_hold_reserves_credits_and_a_capture_spends_part_of_them(
    writer: LedgerClient, services: Services
) -> None:
    account_id = await open_account(writer, 1000)

    hold = await writer.place_hold(account_id, 400, reason="render job")
    assert hold.status == "held"
    assert (hold.amount, hold.balance, hold.held, hold.available) == (400, 1000, 400, 600)
    assert hold.hold_id.startswith("hold_")
    with pytest.raises(InsufficientCredits) as refused:
        await writer.spend(account_id, 601)
    assert refused.value.body == {"message": "Insufficient credits."}
    spent = await writer.spend(account_id, 100)
    assert (spent.balance, spent.held, spent.available) == (900, 400, 500)

    captured = await writer.capture_hold(account_id, hold.hold_id, 250)

    assert (captured.status, captured.captured, captured.released) == ("captured", 250, 150)
    assert (captured.balance, captured.held, captured.available) == (650, 0, 650)
    await caught_up(services.store)
    now = await writer.get_credits(account_id)
    assert (now.balance, now.held, now.available) == (650, 0, 650)
    types = [t for t, _ in await stream_events(services.store, account_stream_id(account_id))]
    assert types == ["AccountOpened", "HoldPlaced", "CreditsSpent", "HoldCaptured"]


async def test_placing_more_than_is_available_is_402_and_records_nothing(
    writer: LedgerClient, services: Services
) -> None:
    account_id = await open_account(writer, 500)
    await writer.place_hold(account_id, 300)

    with pytest.raises(InsufficientCredits) as refused:
        await writer.place_hold(account_id, 201)

    assert refused.value.body == {"message": "Insufficient credits."}
    assert len(await stream_events(services.store, account_stream_id(account_id))) == 2


async def test_placing_repeats_the_first_answer_for_the_same_key(
    writer: LedgerClient, services: Services
) -> None:
    account_id = await open_account(writer, 500)

    first = await writer.place_hold(account_id, 100, idempotency_key="job-1")
    again = await writer.place_hold(account_id, 100, idempotency_key="job-1")
    with pytest.raises(ValidationError) as other_body:
        await writer.place_hold(account_id, 200, idempotency_key="job-1")

    assert again == first
    assert "Idempotency-Key" in other_body.value.errors
    assert len(await stream_events(services.store, account_stream_id(account_id))) == 2


async def test_capture_and_release_are_idempotent_and_settle_a_hold_once(
    writer: LedgerClient,
) -> None:
    account_id = await open_account(writer, 1000)
    first = (await writer.place_hold(account_id, 300)).hold_id
    second = (await writer.place_hold(account_id, 300)).hold_id

    capture = await writer.capture_hold(account_id, first, 300, idempotency_key="cap-1")
    repeat = await writer.capture_hold(account_id, first, 300, idempotency_key="cap-1")
    with pytest.raises(Conflict) as different:
        await writer.capture_hold(account_id, first, 10)
    with pytest.raises(Conflict):
        await writer.release_hold(account_id, first)
    release = await writer.release_hold(account_id, second, idempotency_key="rel-1")
    release_again = await writer.release_hold(account_id, second, idempotency_key="rel-1")
    with pytest.raises(Conflict):
        await writer.capture_hold(account_id, second, 1)
    with pytest.raises(NotFound) as unknown:
        await writer.release_hold(account_id, "hold_nope")

    assert repeat == capture
    assert different.value.body == {"message": f"The hold {first} was already captured."}
    assert release_again == release
    assert release.released == 300
    assert unknown.value.body == {"message": "Hold not found."}
    assert (await writer.get_credits(account_id)).balance == 700


async def test_a_capture_or_release_sent_again_without_a_key_repeats_the_first_answer(
    http: httpx.AsyncClient, writer: LedgerClient, writer_headers: dict[str, str]
) -> None:
    """The key is optional on settling: the same body is enough."""
    account_id = await open_account(writer, 1000)
    captured = (await writer.place_hold(account_id, 300)).hold_id
    released = (await writer.place_hold(account_id, 300)).hold_id
    base = f"/v1/accounts/{account_id}/holds"

    capture = await http.post(
        f"{base}/{captured}/capture", json={"amount": 300}, headers=writer_headers
    )
    repeat = await http.post(
        f"{base}/{captured}/capture", json={"amount": 300}, headers=writer_headers
    )
    different = await http.post(
        f"{base}/{captured}/capture", json={"amount": 10}, headers=writer_headers
    )
    release = await http.post(f"{base}/{released}/release", headers=writer_headers)
    release_again = await http.post(f"{base}/{released}/release", headers=writer_headers)

    assert (capture.status_code, repeat.status_code) == (200, 200)
    assert repeat.json() == capture.json()
    assert different.status_code == 409
    assert (release.status_code, release_again.status_code) == (200, 200)
    assert release_again.json() == release.json()


async def test_the_client_repeats_a_capture_or_release_without_a_key_and_gets_the_first_answer(
    writer: LedgerClient,
) -> None:
    """A worker that settles a hold again (its job run twice) gets the first answer, as
    over HTTP: the client makes no key of its own for a settlement."""
    account_id = await open_account(writer, 1000)
    captured = (await writer.place_hold(account_id, 300)).hold_id
    released = (await writer.place_hold(account_id, 300)).hold_id

    capture = await writer.capture_hold(account_id, captured, 200)
    repeat = await writer.capture_hold(account_id, captured, 200)
    with pytest.raises(Conflict):
        await writer.capture_hold(account_id, captured, 10)
    release = await writer.release_hold(account_id, released)
    release_again = await writer.release_hold(account_id, released)

    assert repeat == capture
    assert release_again == release
    assert (await writer.get_credits(account_id)).balance == 800


async def test_a_settled_hold_under_another_idempotency_key_is_409(
    http: httpx.AsyncClient, writer: LedgerClient, writer_headers: dict[str, str]
) -> None:
    account_id = await open_account(writer, 1000)
    captured = (await writer.place_hold(account_id, 300)).hold_id
    released = (await writer.place_hold(account_id, 300)).hold_id

    capture = await writer.capture_hold(account_id, captured, 200, idempotency_key="a")
    repeat = await writer.capture_hold(account_id, captured, 200, idempotency_key="a")
    with pytest.raises(Conflict) as other_key:
        await writer.capture_hold(account_id, captured, 200, idempotency_key="b")
    no_key = await http.post(  # nor is one without a key: the first capture had one
        f"/v1/accounts/{account_id}/holds/{captured}/capture",
        json={"amount": 200},
        headers=writer_headers,
    )
    with pytest.raises(Conflict) as released_after_capture:
        await writer.release_hold(account_id, captured, idempotency_key="e")
    release = await writer.release_hold(account_id, released, idempotency_key="c")
    release_repeat = await writer.release_hold(account_id, released, idempotency_key="c")

    assert repeat == capture
    assert other_key.value.body == {"message": f"The hold {captured} was already captured."}
    assert no_key.status_code == 409
    assert released_after_capture.value.body == {
        "message": f"The hold {captured} was already captured."
    }
    assert release_repeat == release
    assert (await writer.get_credits(account_id)).balance == 800


async def test_a_released_hold_released_again_under_another_key_answers_its_release(
    http: httpx.AsyncClient, writer: LedgerClient, writer_headers: dict[str, str]
) -> None:
    """The contract's release is 200: a release asks for the hold's credits back, and a
    released hold's went back; a caller whose keys differ (one a call, or none after one)
    gets the release's answer, not 409. Not a replay of its request: no Idempotent-Replayed."""
    account_id = await open_account(writer, 1000)
    hold_id = (await writer.place_hold(account_id, 300)).hold_id
    url = f"/v1/accounts/{account_id}/holds/{hold_id}/release"

    first = await http.post(url, headers={**writer_headers, "Idempotency-Key": "c"})
    other_key = await http.post(url, headers={**writer_headers, "Idempotency-Key": "d"})
    no_key = await http.post(url, headers=writer_headers)

    assert [r.status_code for r in (first, other_key, no_key)] == [200, 200, 200]
    assert other_key.json() == no_key.json() == first.json()
    assert first.json()["status"] == "released"
    assert "idempotent-replayed" not in other_key.headers
    assert "idempotent-replayed" not in no_key.headers
    assert (await writer.get_credits(account_id)).available == 1000


async def test_capturing_more_than_held_is_422_and_bad_bodies_are_422(
    http: httpx.AsyncClient, writer: LedgerClient, writer_headers: dict[str, str]
) -> None:
    account_id = await open_account(writer, 1000)
    hold_id = (await writer.place_hold(account_id, 300)).hold_id
    base = f"/v1/accounts/{account_id}/holds"

    with pytest.raises(ValidationError) as too_much:
        await writer.capture_hold(account_id, hold_id, 301)
    no_amount = await http.post(f"{base}/{hold_id}/capture", json={}, headers=writer_headers)
    no_key = await http.post(base, json={"amount": 10}, headers=writer_headers)
    with pytest.raises(ValidationError) as bad:
        await writer.place_hold(account_id, 0, expires_in_seconds=0)

    assert list(too_much.value.errors) == ["amount"]
    assert no_amount.json()["errors"] == {"amount": ["The amount field is required."]}
    assert no_key.status_code == 422
    assert bad.value.errors == {
        "amount": ["The amount must be at least 1."],
        "expires_in_seconds": ["The expires in seconds must be at least 1."],
    }
    assert (await writer.get_hold(account_id, hold_id)).status == "held"


async def test_customers_cannot_touch_holds(
    http: httpx.AsyncClient, connect: Connect, customer: Customer
) -> None:
    with pytest.raises(Forbidden):
        await connect(customer.token).place_hold(customer.account_id, 10)
    unauthenticated = await http.post(
        f"/v1/accounts/{customer.account_id}/holds", json={"amount": 10}
    )

    assert unauthenticated.status_code == 401


async def test_concurrent_holds_spends_and_captures_never_overdraw(writer: LedgerClient) -> None:
    account_id = await open_account(writer, 1000)

    answers = await asyncio.gather(
        *(
            writer.place_hold(account_id, 100) if n % 4 else writer.spend(account_id, 100)
            for n in range(20)
        ),
        return_exceptions=True,
    )
    # Each is a hold, a spend or a 402: nothing else (no 503: the client does not retry here).
    refused = [a for a in answers if isinstance(a, InsufficientCredits)]
    placed = [a.hold_id for a in answers if isinstance(a, Hold)]
    spent_before = 100 * sum(isinstance(a, Spent) for a in answers)
    assert len(refused) == 10
    assert len(placed) + spent_before // 100 == 10

    settled = await asyncio.gather(
        *(writer.capture_hold(account_id, hold_id, 60) for hold_id in placed),
        *(writer.spend(account_id, 40) for _ in range(len(placed) + 3)),
        return_exceptions=True,
    )

    captures, spends = settled[: len(placed)], settled[len(placed) :]
    assert all(isinstance(a, Hold) for a in captures), captures
    assert all(isinstance(a, Spent | InsufficientCredits) for a in spends), spends
    spent_after = 40 * sum(isinstance(a, Spent) for a in spends)
    balance = await writer.get_credits(account_id)
    assert balance.balance == 1000 - spent_before - 60 * len(placed) - spent_after
    assert balance.available == balance.balance >= 0


async def test_a_due_hold_is_released_by_the_sweeper_and_cannot_be_captured(
    writer: LedgerClient, services: Services
) -> None:
    account_id = await open_account(writer, 1000)
    hold_id = (await writer.place_hold(account_id, 700, expires_in_seconds=1)).hold_id
    await caught_up(services.store)

    await asyncio.sleep(1.1)
    # What a freshly started process does: it knows of the hold only from the database.
    await caught_up(services.store)
    await ExpirySweeper(services.views, services.ledger).sweep()
    with pytest.raises(Conflict) as late_capture:
        await writer.capture_hold(account_id, hold_id, 1)

    assert "expired" in late_capture.value.message
    events = await stream_events(services.store, account_stream_id(account_id))
    assert [t for t, _ in events].count("HoldExpired") == 1
    assert (await writer.get_hold(account_id, hold_id)).status == "expired"
    await caught_up(services.store)
    assert (await writer.get_credits(account_id)).available == 1000


async def test_a_late_capture_is_refused_in_the_same_words_before_and_after_the_sweep(
    writer: LedgerClient, services: Services
) -> None:
    """Refused before the sweeper came, the capture named the expiry as ``…+00:00``; after,
    from the expiry's answer, as ``…Z``, as every time the API answers."""
    account_id = await open_account(writer, 1000)
    placed = await writer.place_hold(account_id, 700, expires_in_seconds=1)
    await asyncio.sleep(1.1)
    with pytest.raises(Conflict) as before_the_sweep:
        await writer.capture_hold(account_id, placed.hold_id, 1)
    await caught_up(services.store)
    await ExpirySweeper(services.views, services.ledger).sweep()
    with pytest.raises(Conflict) as after_the_sweep:
        await writer.capture_hold(account_id, placed.hold_id, 1)

    expected = {"message": f"The hold {placed.hold_id} expired at {placed.expires_at}."}
    assert placed.expires_at.endswith("Z")
    assert before_the_sweep.value.body == expected
    assert after_the_sweep.value.body == expected


async def test_the_running_service_expires_holds_by_itself(
    writer: LedgerClient, services: Services
) -> None:
    account_id = await open_account(writer, 1000)
    hold_id = (await writer.place_hold(account_id, 100, expires_in_seconds=1)).hold_id

    status = "held"
    for _ in range(100):  # the app's own sweeper, once the projector has seen the hold
        await caught_up(services.store)
        status = (await writer.get_hold(account_id, hold_id)).status
        if status != "held":
            break
        await asyncio.sleep(0.1)

    assert status == "expired"


async def test_a_reset_during_an_open_hold_keeps_the_books_right(
    writer: LedgerClient, services: Services
) -> None:
    account_id = await open_account(writer, 1000)
    await writer.spend(account_id, 300)
    hold_id = (await writer.place_hold(account_id, 600)).hold_id

    await writer.monthly_reset(account_id, "2099-01")
    after_reset = await writer.get_credits(account_id)
    await writer.capture_hold(account_id, hold_id, 250)
    await caught_up(services.store)
    projected = await writer.get_credits(account_id)

    # The new period's whole allowance is free; the hold kept its 600 from before.
    assert (after_reset.allowance_remaining, after_reset.held) == (1600, 600)
    assert after_reset.available == 1000
    assert (projected.allowance_remaining, projected.held, projected.available) == (
        1000,
        0,
        1000,
    )


async def test_a_hold_answers_its_expiry_in_utc_with_a_z_as_every_other_time(
    writer: LedgerClient,
) -> None:
    """A hold's expires_at was "…+00:00" while every other time the API answers (grants'
    expiries, purchases', events', endpoints') is "…Z": the one field a client's parser
    of the API's times had to take in another form."""
    account_id = await open_account(writer, 100)

    placed = await writer.place_hold(account_id, 10, expires_in_seconds=3600)
    read = await writer.get_hold(account_id, placed.hold_id)
    released = await writer.release_hold(account_id, placed.hold_id)

    assert placed.expires_at.endswith("Z"), placed.expires_at
    assert placed.expires_at == read.expires_at == released.expires_at


async def test_a_settled_hold_answers_what_of_its_released_credits_lapsed(
    writer: LedgerClient,
) -> None:
    """``released`` is the hold's amount less what it captured (the contract's "the rest is
    released"), but not all of it comes back: an allowance share carried over a reset and a
    closed grant's share end instead. The answer said so nowhere, and a client saw released
    credits its balance never got back."""
    account_id = await open_account(writer, 100)
    grant_id = (await writer.grant(account_id, 80)).grant_id
    carried = await writer.place_hold(account_id, 150)  # 100 of the allowance, 50 of the grant
    assert carried.lapsed == 0
    await writer.monthly_reset(account_id, "2099-01")
    await writer.void_grant(account_id, grant_id)  # its 50 the hold keeps lapse at the settle

    captured = await writer.capture_hold(account_id, carried.hold_id, 30)
    read = await writer.get_hold(account_id, carried.hold_id)
    fresh = await writer.place_hold(account_id, 40)
    released = await writer.release_hold(account_id, fresh.hold_id)

    assert (captured.captured, captured.released, captured.lapsed) == (30, 120, 120)
    assert (captured.balance, captured.available) == (100, 100)
    assert read == captured
    assert (released.released, released.lapsed, released.available) == (40, 0, 100)
