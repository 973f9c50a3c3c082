"""Holds over HTTP: reserve, capture, release, expire, idempotency and concurrency."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from api.expiry import ExpirySweeper
from api.services import Services
from ledger.domain.ids import account_stream_id
from tests.e2e.test_spending_api import open_account, spend
from tests.support.events import caught_up, stream_events


async def place(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    account_id: str,
    amount: int,
    *,
    key: str | None = None,
    expires_in_seconds: int | None = None,
    reason: str = "render job",
) -> httpx.Response:
    body: dict[str, Any] = {"amount": amount, "reason": reason}
    if expires_in_seconds is not None:
        body["expires_in_seconds"] = expires_in_seconds
    return await http.post(
        f"/v1/accounts/{account_id}/holds",
        json=body,
        headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex},
    )


async def credits(http: httpx.AsyncClient, headers: dict[str, str], account_id: str) -> Any:
    response = await http.get(f"/v1/accounts/{account_id}/credits", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_hold_reserves_credits_and_a_capture_spends_part_of_them(
    http: httpx.AsyncClient, writer_headers: dict[str, str], services: Services
) -> None:
    account_id = await open_account(http, writer_headers, 1000)

    placed = await place(http, writer_headers, account_id, 400)
    assert placed.status_code == 201, placed.text
    hold = placed.json()
    assert hold["status"] == "held"
    assert (hold["amount"], hold["balance"], hold["held"], hold["available"]) == (
        400,
        1000,
        400,
        600,
    )
    assert hold["hold_id"].startswith("hold_")
    refused = await spend(http, writer_headers, account_id, 601)
    assert refused.status_code == 402
    assert refused.json() == {"message": "Insufficient credits."}

    captured = await http.post(
        f"/v1/accounts/{account_id}/holds/{hold['hold_id']}/capture",
        json={"amount": 250},
        headers=writer_headers,
    )

    assert captured.status_code == 200, captured.text
    answer = captured.json()
    assert (answer["status"], answer["captured"], answer["released"]) == ("captured", 250, 150)
    await caught_up(services.store)
    now = await credits(http, writer_headers, account_id)
    assert (now["balance"], now["held"], now["available"]) == (750, 0, 750)
    types = [t for t, _ in await stream_events(services.store, account_stream_id(account_id))]
    assert types == ["AccountOpened", "HoldPlaced", "HoldCaptured"]


async def test_placing_more_than_is_available_is_402_and_records_nothing(
    http: httpx.AsyncClient, writer_headers: dict[str, str], services: Services
) -> None:
    account_id = await open_account(http, writer_headers, 500)
    assert (await place(http, writer_headers, account_id, 300)).status_code == 201

    refused = await place(http, writer_headers, account_id, 201)

    assert refused.status_code == 402
    assert refused.json() == {"message": "Insufficient credits."}
    assert len(await stream_events(services.store, account_stream_id(account_id))) == 2


async def test_placing_repeats_the_first_answer_for_the_same_key(
    http: httpx.AsyncClient, writer_headers: dict[str, str], services: Services
) -> None:
    account_id = await open_account(http, writer_headers, 500)

    first = await place(http, writer_headers, account_id, 100, key="job-1")
    again = await place(http, writer_headers, account_id, 100, key="job-1")
    other_body = await place(http, writer_headers, account_id, 200, key="job-1")

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert other_body.status_code == 422
    assert "Idempotency-Key" in other_body.json()["errors"]
    assert len(await stream_events(services.store, account_stream_id(account_id))) == 2


async def test_capture_and_release_are_idempotent_and_settle_a_hold_once(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    account_id = await open_account(http, writer_headers, 1000)
    first = (await place(http, writer_headers, account_id, 300)).json()["hold_id"]
    second = (await place(http, writer_headers, account_id, 300)).json()["hold_id"]
    base = f"/v1/accounts/{account_id}/holds"

    capture = await http.post(
        f"{base}/{first}/capture", json={"amount": 300}, headers=writer_headers
    )
    repeat = await http.post(
        f"{base}/{first}/capture", json={"amount": 300}, headers=writer_headers
    )
    different = await http.post(
        f"{base}/{first}/capture", json={"amount": 10}, headers=writer_headers
    )
    release_captured = await http.post(f"{base}/{first}/release", headers=writer_headers)
    release = await http.post(f"{base}/{second}/release", headers=writer_headers)
    release_again = await http.post(f"{base}/{second}/release", headers=writer_headers)
    capture_released = await http.post(
        f"{base}/{second}/capture", json={"amount": 1}, headers=writer_headers
    )
    unknown = await http.post(f"{base}/hold_nope/release", headers=writer_headers)

    assert (capture.status_code, repeat.status_code) == (200, 200)
    assert repeat.json() == capture.json()
    assert different.status_code == 409
    assert different.json() == {"message": f"The hold {first} was already captured."}
    assert release_captured.status_code == 409
    assert (release.status_code, release_again.status_code) == (200, 200)
    assert release_again.json() == release.json()
    assert release.json()["released"] == 300
    assert capture_released.status_code == 409
    assert unknown.status_code == 404
    assert unknown.json() == {"message": "Hold not found."}
    assert (await credits(http, writer_headers, account_id))["balance"] == 700


async def test_a_settled_hold_under_another_idempotency_key_is_409(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    account_id = await open_account(http, writer_headers, 1000)
    captured = (await place(http, writer_headers, account_id, 300)).json()["hold_id"]
    released = (await place(http, writer_headers, account_id, 300)).json()["hold_id"]
    base = f"/v1/accounts/{account_id}/holds"

    def keyed(key: str) -> dict[str, str]:
        return {**writer_headers, "Idempotency-Key": key}

    capture = await http.post(
        f"{base}/{captured}/capture", json={"amount": 200}, headers=keyed("a")
    )
    repeat = await http.post(f"{base}/{captured}/capture", json={"amount": 200}, headers=keyed("a"))
    other_key = await http.post(
        f"{base}/{captured}/capture", json={"amount": 200}, headers=keyed("b")
    )
    no_key = await http.post(
        f"{base}/{captured}/capture", json={"amount": 200}, headers=writer_headers
    )
    release = await http.post(f"{base}/{released}/release", headers=keyed("c"))
    release_repeat = await http.post(f"{base}/{released}/release", headers=keyed("c"))
    release_other_key = await http.post(f"{base}/{released}/release", headers=keyed("d"))

    assert (capture.status_code, repeat.status_code) == (200, 200)
    assert repeat.json() == capture.json()
    assert (other_key.status_code, no_key.status_code) == (409, 409)
    assert other_key.json() == {"message": f"The hold {captured} was already captured."}
    assert (release.status_code, release_repeat.status_code) == (200, 200)
    assert release_repeat.json() == release.json()
    assert release_other_key.status_code == 409
    assert (await credits(http, writer_headers, account_id))["balance"] == 800


async def test_capturing_more_than_held_is_422_and_bad_bodies_are_422(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    account_id = await open_account(http, writer_headers, 1000)
    hold_id = (await place(http, writer_headers, account_id, 300)).json()["hold_id"]
    base = f"/v1/accounts/{account_id}/holds"

    too_much = await http.post(
        f"{base}/{hold_id}/capture", json={"amount": 301}, headers=writer_headers
    )
    no_amount = await http.post(f"{base}/{hold_id}/capture", json={}, headers=writer_headers)
    no_key = await http.post(base, json={"amount": 10}, headers=writer_headers)
    bad = await place(http, writer_headers, account_id, 0, expires_in_seconds=0)

    assert too_much.status_code == 422
    assert list(too_much.json()["errors"]) == ["amount"]
    assert no_amount.json()["errors"] == {"amount": ["The amount field is required."]}
    assert no_key.status_code == 422
    assert bad.status_code == 422
    assert bad.json()["errors"] == {
        "amount": ["The amount must be at least 1."],
        "expires_in_seconds": ["The expires in seconds must be at least 1."],
    }
    held = await http.get(f"{base}/{hold_id}", headers=writer_headers)
    assert held.json()["status"] == "held"


async def test_customers_cannot_touch_holds(
    http: httpx.AsyncClient, writer_headers: dict[str, str], customer: Any
) -> None:
    refused = await place(http, customer.headers, customer.account_id, 10)
    unauthenticated = await http.post(
        f"/v1/accounts/{customer.account_id}/holds", json={"amount": 10}
    )

    assert refused.status_code == 403
    assert unauthenticated.status_code == 401


async def test_concurrent_holds_spends_and_captures_never_overdraw(
    http: httpx.AsyncClient, writer_headers: dict[str, str], services: Services
) -> None:
    account_id = await open_account(http, writer_headers, 1000)

    answers = await asyncio.gather(
        *(
            place(http, writer_headers, account_id, 100)
            if n % 4
            else spend(http, writer_headers, account_id, 100)
            for n in range(20)
        )
    )
    holds = [a for n, a in enumerate(answers) if n % 4]
    spends = [a for n, a in enumerate(answers) if not n % 4]
    statuses = [r.status_code for r in answers]
    assert statuses.count(402) == 10
    assert statuses.count(200) + statuses.count(201) == 10

    placed = [r.json()["hold_id"] for r in holds if r.status_code == 201]
    base = f"/v1/accounts/{account_id}/holds"
    settled = await asyncio.gather(
        *(
            http.post(f"{base}/{hold_id}/capture", json={"amount": 60}, headers=writer_headers)
            for hold_id in placed
        ),
        *(spend(http, writer_headers, account_id, 40) for _ in range(len(placed) + 3)),
    )

    assert all(r.status_code in (200, 402) for r in settled)
    spent_after = sum(40 for r in settled[len(placed) :] if r.status_code == 200)
    assert sum(r.status_code == 200 for r in settled[: len(placed)]) == len(placed)
    balance = await credits(http, writer_headers, account_id)
    spent_before = 100 * sum(r.status_code == 200 for r in spends)
    assert balance["balance"] == 1000 - spent_before - 60 * len(placed) - spent_after
    assert balance["available"] == balance["balance"] >= 0


async def test_a_due_hold_is_released_by_the_sweeper_and_cannot_be_captured(
    http: httpx.AsyncClient, writer_headers: dict[str, str], services: Services
) -> None:
    account_id = await open_account(http, writer_headers, 1000)
    hold_id = (await place(http, writer_headers, account_id, 700, expires_in_seconds=1)).json()[
        "hold_id"
    ]
    await caught_up(services.store)

    await asyncio.sleep(1.1)
    # What a freshly started process does: it knows of the hold only from the database.
    await caught_up(services.store)
    await ExpirySweeper(services.views, services.ledger).sweep()
    late_capture = await http.post(
        f"/v1/accounts/{account_id}/holds/{hold_id}/capture",
        json={"amount": 1},
        headers=writer_headers,
    )

    assert late_capture.status_code == 409
    assert "expired" in late_capture.json()["message"]
    events = await stream_events(services.store, account_stream_id(account_id))
    assert [t for t, _ in events].count("HoldExpired") == 1
    shown = await http.get(f"/v1/accounts/{account_id}/holds/{hold_id}", headers=writer_headers)
    assert shown.json()["status"] == "expired"
    await caught_up(services.store)
    assert (await credits(http, writer_headers, account_id))["available"] == 1000


async def test_the_running_service_expires_holds_by_itself(
    http: httpx.AsyncClient, writer_headers: dict[str, str], services: Services
) -> None:
    account_id = await open_account(http, writer_headers, 1000)
    hold_id = (await place(http, writer_headers, account_id, 100, expires_in_seconds=1)).json()[
        "hold_id"
    ]
    url = f"/v1/accounts/{account_id}/holds/{hold_id}"

    status = "held"
    for _ in range(100):  # the app's own sweeper, once the projector has seen the hold
        await caught_up(services.store)
        status = (await http.get(url, headers=writer_headers)).json()["status"]
        if status != "held":
            break
        await asyncio.sleep(0.1)

    assert status == "expired"


async def test_a_reset_during_an_open_hold_keeps_the_books_right(
    http: httpx.AsyncClient, writer_headers: dict[str, str], services: Services
) -> None:
    account_id = await open_account(http, writer_headers, 1000)
    await spend(http, writer_headers, account_id, 300)
    hold_id = (await place(http, writer_headers, account_id, 600)).json()["hold_id"]

    reset = await http.post(
        f"/v1/accounts/{account_id}/monthly-reset",
        json={"period": "2099-01"},
        headers=writer_headers,
    )
    assert reset.status_code == 200, reset.text
    after_reset = await credits(http, writer_headers, account_id)
    captured = await http.post(
        f"/v1/accounts/{account_id}/holds/{hold_id}/capture",
        json={"amount": 250},
        headers=writer_headers,
    )
    await caught_up(services.store)
    projected = await credits(http, writer_headers, account_id)

    # The new period's whole allowance is free; the hold kept its 600 from before.
    assert (after_reset["allowance_remaining"], after_reset["held"]) == (1600, 600)
    assert after_reset["available"] == 1000
    assert captured.status_code == 200
    assert (projected["allowance_remaining"], projected["held"], projected["available"]) == (
        1000,
        0,
        1000,
    )
