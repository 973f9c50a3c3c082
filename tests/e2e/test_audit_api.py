"""Auditors over HTTP: account histories, the global feed, balances as of any moment."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx

from api.access.tokens import Scope
from api.routes.auditors import parse_as_of
from api.services import Services
from ledger.domain.ids import account_stream_id
from ledger.store.commit import write_batch
from tests.e2e.conftest import Customer
from tests.e2e.test_checkout_flow import pay, purchase
from tests.support.events import tail_position
from tests.support.ledger import open_account
from tests.support.waiting import until


async def auditor(services: Services) -> dict[str, str]:
    issued = await services.tokens.issue(Scope.LEDGER_AUDIT, name="auditor")
    return {"Authorization": f"Bearer {issued.secret}"}


async def spend(http: httpx.AsyncClient, headers: dict[str, str], account_id: str, n: int) -> None:
    response = await http.post(
        f"/v1/accounts/{account_id}/spend",
        json={"amount": n, "reason": "work"},
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 200, response.text


async def test_an_auditor_pages_through_an_account_history_without_gaps_or_repeats(
    http: httpx.AsyncClient, customer: Customer, services: Services, writer_headers: dict[str, str]
) -> None:
    for n in range(1, 8):
        await spend(http, writer_headers, customer.account_id, n)
    headers = await auditor(services)
    path = f"/v1/accounts/{customer.account_id}/events"

    seen: list[dict[str, Any]] = []
    after = None

    async def paged_to_the_last_spend() -> bool:
        # A page stops at its look's watermark, which a transaction of another database
        # can hold short of the last spend for a moment: the reader asks again from there.
        nonlocal after
        while True:
            params = {"limit": 3, **({"after": after} if after is not None else {})}
            page = (await http.get(path, params=params, headers=headers)).json()
            seen.extend(page["data"])
            if page["next_after"] is None:
                after = seen[-1]["position"] if seen else None
                return len(seen) >= 8
            after = page["next_after"]

    await until(paged_to_the_last_spend, what="the history read up to the last spend")

    assert [e["version"] for e in seen] == list(range(1, 9))
    assert [e["type"] for e in seen] == ["AccountOpened"] + ["CreditsSpent"] * 7
    assert seen[1]["data"]["amount"] == 1
    assert all(len(e["hash"]) == 64 for e in seen)
    assert [e["position"] for e in seen] == sorted(e["position"] for e in seen)


async def test_customers_read_only_their_own_history(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    other_id = f"{customer.account_id}_neighbour"
    await open_account(services.ledger, other_id, 10)

    own = await http.get(f"/v1/accounts/{customer.account_id}/events", headers=customer.headers)
    other = await http.get(f"/v1/accounts/{other_id}/events", headers=customer.headers)
    other_credits = await http.get(f"/v1/accounts/{other_id}/credits", headers=customer.headers)
    feed = await http.get("/v1/events", headers=customer.headers)

    assert own.status_code == 200
    assert other.status_code == other_credits.status_code == feed.status_code == 403


async def test_an_unknown_account_history_is_404_as_its_balance_is(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    headers = await auditor(services)
    missing = f"{customer.account_id}_mistyped"

    history = await http.get(f"/v1/accounts/{missing}/events", headers=headers)
    credits = await http.get(f"/v1/accounts/{missing}/credits", headers=headers)
    past_the_end = await http.get(
        f"/v1/accounts/{customer.account_id}/events",
        params={"after": await tail_position(services.store)},
        headers=headers,
    )

    assert history.status_code == credits.status_code == 404
    assert history.json() == {"message": "Account not found."}
    # A known account's page past its last event is empty, not missing.
    assert past_the_end.status_code == 200, past_the_end.text
    assert past_the_end.json() == {"data": [], "has_more": False, "next_after": None}


async def test_an_unknown_account_history_is_404_on_every_page_as_its_grants_are(
    http: httpx.AsyncClient, customer: Customer, services: Services, writer_headers: dict[str, str]
) -> None:
    """A tailing auditor resumes with ``after``: an account that does not exist was an empty
    200 there (only the first page asked whether it did), where its grants' list, paged the
    same way, answers 404 "Account not found."."""
    headers = await auditor(services)
    missing = f"{customer.account_id}_mistyped"
    cursor = {"after": 1}

    history = await http.get(f"/v1/accounts/{missing}/events", params=cursor, headers=headers)
    grants = await http.get(f"/v1/accounts/{missing}/grants", params=cursor, headers=writer_headers)

    assert grants.status_code == 404, grants.text
    assert history.status_code == 404, history.text
    assert history.json() == grants.json() == {"message": "Account not found."}


async def test_the_global_feed_is_for_auditors_only(
    http: httpx.AsyncClient, writer_headers: dict[str, str], services: Services
) -> None:
    assert (await http.get("/v1/events", headers=writer_headers)).status_code == 403
    assert (await http.get("/v1/events", headers=await auditor(services))).status_code == 200


async def test_the_global_feed_has_no_gaps_or_repeats_under_concurrent_writes(
    http: httpx.AsyncClient, writer_headers: dict[str, str], services: Services
) -> None:
    headers = await auditor(services)
    start = await tail_position(services.store)
    account_ids = []
    for _ in range(5):
        account_id = f"acct_feed_{uuid.uuid4().hex[:8]}"
        await open_account(services.ledger, account_id, 100_000)
        account_ids.append(account_id)
    writing = asyncio.gather(
        *(spend(http, writer_headers, a, n) for n in range(1, 21) for a in account_ids)
    )
    read: list[int] = []
    after = start

    async def read_pages() -> None:
        nonlocal after
        page = (
            await http.get("/v1/events", params={"after": after, "limit": 7}, headers=headers)
        ).json()
        read.extend(e["position"] for e in page["data"])
        if page["data"]:
            after = page["data"][-1]["position"]

    while not writing.done():
        await read_pages()
    await writing
    for _ in range(50):
        await read_pages()

    written = [
        r[0]
        for r in await services.pool.fetch(
            "SELECT notification_id FROM stored_events WHERE notification_id > $1 ORDER BY 1",
            start,
        )
    ]
    assert read == written  # every event once, in commit order


async def test_balance_as_of_a_moment_matches_a_replay_to_then(
    http: httpx.AsyncClient, customer: Customer, services: Services, writer_headers: dict[str, str]
) -> None:
    headers = await auditor(services)
    path = f"/v1/accounts/{customer.account_id}/credits"
    moments, balances = [], []
    for n in (100, 250, 400):
        await spend(http, writer_headers, customer.account_id, n)
        moments.append(datetime.now(UTC))
        balances.append((await services.ledger.account(customer.account_id)).balance)
        await asyncio.sleep(0.01)

    for moment, balance in zip(moments, balances, strict=True):
        response = await http.get(path, params={"as_of": moment.isoformat()}, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["balance"] == balance
        replayed = await services.ledger.account_as_of(customer.account_id, moment)
        assert replayed.balance == balance

    before_opening = await http.get(path, params={"as_of": "2000-01-01T00:00:00Z"}, headers=headers)
    naive = await http.get(path, params={"as_of": "2026-01-01T00:00:00"}, headers=headers)
    assert before_opening.status_code == 404
    assert naive.status_code == 422
    assert "as_of" in naive.json()["errors"]


async def test_as_of_takes_rfc_3339_times_with_a_lower_case_t_and_z(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    """RFC 3339 (5.6) lets "T" and "Z" be lower case: "2026-12-04t17:55:00z" was a 422."""
    headers = await auditor(services)
    path = f"/v1/accounts/{customer.account_id}/credits"
    moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    upper = await http.get(path, params={"as_of": moment}, headers=headers)
    lower = await http.get(path, params={"as_of": moment.lower()}, headers=headers)

    assert upper.status_code == 200, upper.text
    assert lower.status_code == 200, lower.text
    assert lower.json() == upper.json()


async def test_as_of_takes_a_positive_offset_whose_plus_a_url_left_unencoded(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    """A query string reads "+" as a space: "?as_of=…T13:00:00+01:00" typed into curl or a
    browser arrived as "…T13:00:00 01:00", a 422 for a time that looked right."""
    headers = await auditor(services)
    path = f"/v1/accounts/{customer.account_id}/credits"
    moment = datetime.now(UTC).astimezone(timezone(timedelta(hours=1))).isoformat()

    encoded = await http.get(path, params={"as_of": moment}, headers=headers)
    typed = await http.get(f"{path}?as_of={moment}", headers=headers)

    assert "+01:00" in str(typed.request.url)
    assert encoded.status_code == 200, encoded.text
    assert typed.status_code == 200, typed.text
    assert typed.json() == encoded.json()


async def test_as_of_takes_an_offset_without_its_colon_as_strftime_writes_it(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    """RFC 3339 writes "+01:00"; Python's "%z" (and ISO 8601's basic form) "+0100", the same
    instant, which the ledger's times take, in bodies too. Typed into a URL unencoded, its
    "+" arrived as a space and was a 422 where "+01:00" so typed was taken."""
    headers = await auditor(services)
    path = f"/v1/accounts/{customer.account_id}/credits"
    now = datetime.now(UTC).astimezone(timezone(timedelta(hours=1)))
    colon, bare = now.isoformat(), now.strftime("%Y-%m-%dT%H:%M:%S.%f%z")
    assert bare.endswith("+0100")

    answers = [
        await http.get(path, params={"as_of": colon}, headers=headers),
        await http.get(path, params={"as_of": bare}, headers=headers),
        await http.get(f"{path}?as_of={bare}", headers=headers),  # "+" read as a space
    ]

    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert answers[1].json() == answers[2].json() == answers[0].json()
    assert datetime.fromisoformat(answers[0].json()["as_of"]) == now


async def test_an_as_of_with_digits_past_the_microsecond_leaves_out_a_later_event(
    http: httpx.AsyncClient, customer: Customer, services: Services, writer_headers: dict[str, str]
) -> None:
    """RFC 3339 allows any number of fraction digits. Rounded to the nearest microsecond (as
    msgspec reads them), a moment a tenth of a microsecond before a spend was its instant,
    and the answer counted that spend and echoed the later instant as its as_of."""
    headers = await auditor(services)
    before = (await services.ledger.account(customer.account_id)).balance
    await spend(http, writer_headers, customer.account_id, 10)
    spent_at = (await services.store.load(account_stream_id(customer.account_id)))[-1].recorded_at
    just_before = (spent_at - timedelta(microseconds=1)).isoformat(timespec="microseconds")

    answer = await http.get(
        f"/v1/accounts/{customer.account_id}/credits",
        params={"as_of": just_before.replace("+00:00", "9Z")},
        headers=headers,
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["balance"] == before
    assert datetime.fromisoformat(answer.json()["as_of"]) == spent_at - timedelta(microseconds=1)


async def test_an_as_of_at_a_leap_second_is_read_as_the_last_microsecond_before_it(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    """RFC 3339 writes a leap second as second 60 of 23:59 UTC on a month's last day; an
    auditor asking for a balance at the end of 2016 (``2016-12-31T23:59:60Z``) was told that
    was no RFC 3339 time (422). The account here opened after it: 404, as any moment before
    its opening is. A second 60 anywhere else is still 422."""
    headers = await auditor(services)
    path = f"/v1/accounts/{customer.account_id}/credits"

    answers = [
        await http.get(path, params={"as_of": moment}, headers=headers)
        for moment in ("2016-12-31T23:59:60Z", "2017-01-01T05:29:60.5+05:30")
    ]
    not_a_leap_second = await http.get(
        path, params={"as_of": "2016-12-31T23:58:60Z"}, headers=headers
    )

    assert [a.status_code for a in answers] == [404, 404], [a.text for a in answers]
    assert answers[0].json() == {"message": "Account not found."}
    assert parse_as_of("2017-01-01T05:29:60.5+05:30") == datetime(
        2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC
    )
    assert not_a_leap_second.status_code == 422, not_a_leap_second.text
    assert "RFC 3339" in not_a_leap_second.json()["message"]


async def test_an_as_of_answer_that_an_open_append_holds_back_is_a_503_saying_why(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    """It said the account was busy with other writes, whatever account held it up."""
    headers = await auditor(services)
    other = await services.ledger.account(customer.account_id)
    other.purchase(session_id="cs_open", credits=100)
    slow = await services.pool.acquire()
    transaction = slow.transaction()
    await transaction.start()
    try:
        [outcome] = await write_batch(slow, [services.ledger.repository.writes([other], [])])
        outcome.result()  # recorded, left uncommitted past the answer's 2 s
        response = await http.get(
            f"/v1/accounts/{customer.account_id}/credits",
            params={"as_of": datetime.now(UTC).isoformat()},
            headers=headers,
        )
    finally:
        await transaction.rollback()
        await services.pool.release(slow)

    assert response.status_code == 503
    assert response.json() == {
        "message": "Events recorded before that moment are still being written; please retry."
    }
    assert response.headers["Retry-After"] == "1"


async def test_an_account_history_holds_its_purchases_events_in_commit_order_with_their_stream(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    bought = await purchase(http, customer, 300)
    await pay(http, bought)
    checkout = f"checkout/{bought.session_id}"
    page: dict[str, Any] = {}
    seen: list[tuple[str, str]] = []

    async def read_up_to_the_purchase() -> bool:
        # A page stops at its look's watermark, which can stand short of the last events
        # for a moment: the next look passes them.
        page.update(
            (
                await http.get(
                    f"/v1/accounts/{customer.account_id}/events", headers=customer.headers
                )
            ).json()
        )
        seen[:] = [(e["type"], e["stream"]) for e in page["data"]]
        return ("CreditsPurchased", f"account/{customer.account_id}") in seen

    await until(read_up_to_the_purchase, what="the history up to the purchase")

    assert ("CheckoutRequested", checkout) in seen
    assert ("CheckoutPaid", checkout) in seen
    assert ("CreditsPurchased", f"account/{customer.account_id}") in seen
    assert seen.index(("CheckoutRequested", checkout)) < seen.index(("CheckoutPaid", checkout))
    assert [e["position"] for e in page["data"]] == sorted(e["position"] for e in page["data"])


async def test_a_customer_reads_its_balance_as_of_a_moment_on_v1_credits_too(
    http: httpx.AsyncClient, customer: Customer, writer_headers: dict[str, str]
) -> None:
    """`GET /v1/credits?as_of=` answered the balance now, without saying so: a customer's
    `as_of` is answered as `GET /v1/accounts/{its account}/credits?as_of=` answers it."""
    before_the_spend = datetime.now(UTC).isoformat()
    await asyncio.sleep(0.01)
    await spend(http, writer_headers, customer.account_id, 300)
    own = f"/v1/accounts/{customer.account_id}/credits"

    then = await http.get(
        "/v1/credits", params={"as_of": before_the_spend}, headers=customer.headers
    )
    by_account = await http.get(own, params={"as_of": before_the_spend}, headers=customer.headers)
    naive = await http.get(
        "/v1/credits", params={"as_of": "2026-01-01T00:00:00"}, headers=customer.headers
    )

    assert then.status_code == 200, then.text
    assert then.json() == by_account.json()
    assert then.json()["balance"] == 1000
    assert naive.status_code == 422
    assert "as_of" in naive.json()["errors"]
    now = await http.get("/v1/credits", headers=customer.headers)
    assert now.json()["balance"] == 700
