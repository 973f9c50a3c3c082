"""Read-your-writes without a standby: command answers carry Ledger-Position, and a read
with Ledger-Min-Position answers at least that far (api/read_side.py, docs/scaling.md)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from api import read_side
from api.services import Services
from tests.support.events import caught_up
from tests.support.raw_http import open_account, spend
from tests.support.stripe_events import event_body, signature
from tests.support.waiting import until


async def test_answers_carry_their_position_and_a_read_with_it_is_never_behind(
    http: httpx.AsyncClient,
    services: Services,
    writer_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account_id = await open_account(http, writer_headers, 1000)
    await caught_up(services.store)

    first = await spend(http, writer_headers, account_id, 100, key=f"{account_id}-1")
    assert first.status_code == 200
    position = int(first.headers["ledger-position"])
    assert position > 0

    # No projector runs here: the views never apply the spend, so the read answers, once
    # its wait is over, the balance from the write side (docs/scaling.md).
    read = await http.get(
        f"/v1/accounts/{account_id}/credits",
        headers={**writer_headers, "Ledger-Min-Position": str(position)},
    )
    assert read.status_code == 200
    assert read.json()["balance"] == 900
    assert read.headers["ledger-read-from"] == "primary"

    # With a wait no test outlasts, a read waits for the views to apply its position and
    # answers once they have; one that did not see them get there would hang until the cap.
    monkeypatch.setattr(read_side, "READ_WAIT", 600.0)
    waiting = asyncio.ensure_future(
        http.get(
            f"/v1/accounts/{account_id}/credits",
            headers={**writer_headers, "Ledger-Min-Position": str(position)},
        )
    )
    try:
        await until(
            lambda: services.reads.primary.progress._waiting or waiting.done(),
            what="the read waiting for the views",
        )
        assert not waiting.done(), "answered before the views applied its position"
        await caught_up(services.store)
        read = await asyncio.wait_for(waiting, timeout=60)  # a bound on a hang, not a measure
    finally:
        waiting.cancel()
    assert read.status_code == 200
    assert read.json()["balance"] == 900
    assert read.headers["ledger-read-from"] == "primary"

    # Once the views have applied it, the read answers from them without waiting again.
    read = await asyncio.wait_for(
        http.get(
            f"/v1/accounts/{account_id}/credits",
            headers={**writer_headers, "Ledger-Min-Position": str(position)},
        ),
        timeout=60,
    )
    assert read.json()["balance"] == 900

    # A retried key answers at a position at least as far as its first answer.
    again = await spend(http, writer_headers, account_id, 100, key=f"{account_id}-1")
    assert again.json() == first.json()
    assert int(again.headers["ledger-position"]) >= position
    # A refusal wrote nothing and tells no position.
    refused = await spend(http, writer_headers, account_id, 5000)
    assert refused.status_code == 402
    assert "ledger-position" not in refused.headers


@pytest.mark.parametrize("feed", ["account", "global"])
async def test_an_event_feed_read_with_a_min_position_waits_for_the_store_not_the_views(
    http: httpx.AsyncClient,
    writer_headers: dict[str, str],
    auditor_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    feed: str,
) -> None:
    """The feeds answer from the store: a position it lets readers pass is there to read,
    whatever the views have applied. No projector runs here, and a read that waited for the
    views (a second, here a minute) answered late, without the event if the store's
    watermark had not passed it by then."""
    monkeypatch.setattr(read_side, "READ_WAIT", 60.0)
    account_id = await open_account(http, writer_headers, 1000)
    spent = await spend(http, writer_headers, account_id, 100)
    position = int(spent.headers["ledger-position"])
    path = f"/v1/accounts/{account_id}/events" if feed == "account" else "/v1/events"

    read = await asyncio.wait_for(
        http.get(
            path,
            params={"after": position - 1, "limit": 1},
            headers={**auditor_headers, "Ledger-Min-Position": str(position)},
        ),
        timeout=20,  # a bound on a hang (the views never get there), not a measure
    )

    assert read.status_code == 200, read.text
    assert [(e["position"], e["type"]) for e in read.json()["data"]] == [(position, "CreditsSpent")]
    assert read.headers["ledger-read-from"] == "primary"


async def test_a_min_position_that_is_not_a_number_is_422(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    for value in ("x", "-1", "1.5", "9" * 30):
        answer = await http.get(
            "/v1/accounts/acct_nobody/credits",
            headers={**writer_headers, "Ledger-Min-Position": value},
        )
        assert answer.status_code == 422
        assert list(answer.json()["errors"]) == ["Ledger-Min-Position"]


async def test_the_largest_min_position_the_document_gives_is_the_largest_taken(
    http: httpx.AsyncClient, writer_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's document gives the header's ``maximum`` (api/openapi.py) and the middleware
    refuses a position of more digits (api/read_side.py): one constant says both."""
    monkeypatch.setattr(read_side, "READ_WAIT", 0.0)  # the views never get there: no wait
    path = "/v1/accounts/acct_nobody/credits"
    unsent = await http.get(path, headers=writer_headers)

    for position, status in (
        (read_side.MAX_MIN_POSITION, unsent.status_code),
        (read_side.MAX_MIN_POSITION + 1, 422),
    ):
        answer = await http.get(
            path, headers={**writer_headers, "Ledger-Min-Position": str(position)}
        )
        assert answer.status_code == status, (position, answer.text)
    assert unsent.status_code != 422


async def test_zeros_leading_a_min_position_or_a_limit_are_read_as_its_value(
    http: httpx.AsyncClient,
    writer_headers: dict[str, str],
    auditor_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As every number the API, the variables and the command line read: a position or a
    limit written with leading zeros past 19 or 9 characters was 422, said to be no whole
    number or out of range."""
    monkeypatch.setattr(read_side, "READ_WAIT", 0.0)  # the views never get there: no wait
    account_id = await open_account(http, writer_headers, 1000)
    padded = "0" * 30 + str(read_side.MAX_MIN_POSITION)

    answer = await http.get(
        f"/v1/accounts/{account_id}/events",
        params={"limit": "0000000001"},
        headers={**auditor_headers, "Ledger-Min-Position": padded},
    )

    assert answer.status_code == 200, answer.text
    assert len(answer.json()["data"]) == 1
    longer = await http.get(
        f"/v1/accounts/{account_id}/credits",
        headers={**writer_headers, "Ledger-Min-Position": padded + "0"},
    )
    assert longer.status_code == 422  # 20 digits after its zeros


async def test_a_min_position_refused_is_answered_with_its_length_as_every_answer_is(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    """Its 422 went out with no Content-Length: uvicorn sent it chunked, to an HTTP/1.0
    client too (which cannot read chunks), and a HEAD had no length to tell."""
    path = "/v1/accounts/acct_nobody/credits"
    not_a_number = {**writer_headers, "Ledger-Min-Position": "x"}
    twice = [*writer_headers.items(), ("Ledger-Min-Position", "1"), ("Ledger-Min-Position", "2")]

    for headers in (not_a_number, twice):
        answer = await http.get(path, headers=headers)
        head = await http.head(path, headers=headers)

        assert answer.status_code == head.status_code == 422, answer.text
        assert "transfer-encoding" not in answer.headers
        assert answer.headers["content-length"] == str(len(answer.content))
        assert head.headers["content-length"] == answer.headers["content-length"]
        assert head.content == b""


@pytest.mark.parametrize("value", ["x", "-1"])
async def test_routes_that_read_no_views_ignore_a_min_position(
    http: httpx.AsyncClient, value: str
) -> None:
    """The contract's /healthz is 200 while the process lives, /readyz 200 or 503 and the
    Stripe webhook 200 for every verified event, whatever a proxy or a client adds: only
    the API's reads and commands read Ledger-Min-Position (they were all 422)."""
    headers = {"Ledger-Min-Position": value}
    body = event_body("customer.created", {"id": "cus_1"})
    delivery = {"Stripe-Signature": signature(body), "Content-Type": "application/json"}

    assert (await http.get("/healthz", headers=headers)).status_code == 200
    assert (await http.get("/readyz", headers=headers)).status_code == 200
    assert (await http.get("/metrics", headers=headers)).status_code == 200
    assert (await http.get("/schema", headers=headers)).status_code == 200
    assert (await http.get("/", headers=headers)).status_code == 200
    twice = [(b"ledger-min-position", value.encode()), (b"ledger-min-position", b"1")]
    assert (await http.get("/healthz", headers=twice)).status_code == 200
    webhook = await http.post("/v1/stripe/webhook", content=body, headers={**delivery, **headers})
    assert webhook.status_code == 200, webhook.text


async def test_a_read_behind_views_answers_what_another_replica_wrote(
    http: httpx.AsyncClient,
    replica: httpx.AsyncClient,
    services: Services,
    writer_headers: dict[str, str],
) -> None:
    """The write side's answer comes from the store: the replica asked has the account in
    memory from a spend of its own, and another replica has spent since."""
    account_id = await open_account(http, writer_headers, 1000)
    await caught_up(services.store)
    assert (await spend(replica, writer_headers, account_id, 100)).status_code == 200
    other = await spend(http, writer_headers, account_id, 50)
    assert other.status_code == 200

    read = await replica.get(  # no projector runs: the views stay behind that position
        f"/v1/accounts/{account_id}/credits",
        headers={**writer_headers, "Ledger-Min-Position": other.headers["ledger-position"]},
    )

    assert read.status_code == 200
    assert read.json()["balance"] == 850
