"""The contract's Grants section over HTTP.

Normal calls go through the Python client (clients/python); bodies it would not
send (a bad time, a missing amount) stay raw httpx.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from ledger_client import Conflict, LedgerClient, NotFound, ValidationError

from api.access.tokens import Scope
from api.services import Services
from tests.e2e.conftest import Connect
from tests.e2e.test_spending_api import open_account
from tests.support.events import caught_up
from tests.support.projector import projector_running


async def grant(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    account_id: str,
    body: dict[str, Any],
    key: str | None = None,
) -> httpx.Response:
    return await http.post(
        f"/v1/accounts/{account_id}/grants",
        json=body,
        headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex},
    )


async def test_a_grant_is_spent_after_the_allowance_and_before_top_ups(
    writer: LedgerClient,
) -> None:
    account_id = await open_account(writer, 100)
    expires = datetime.now(UTC) + timedelta(days=30)

    given = await writer.grant(account_id, 500, expires_at=expires, priority=10, reason="welcome")
    spent = await writer.spend(account_id, 250, reason="job")

    assert given.grant_id.startswith("grant_")
    assert (given.amount, given.remaining, given.priority) == (500, 500, 10)
    assert given.expires_at is not None
    assert datetime.fromisoformat(given.expires_at) == expires
    assert (spent.from_allowance, spent.from_topup) == (100, 0)
    assert spent.from_grants == {given.grant_id: 150}
    assert spent.balance == 350


async def test_the_same_key_gives_the_same_grant_once(writer: LedgerClient) -> None:
    account_id = await open_account(writer, 0)

    first = await writer.grant(account_id, 50, idempotency_key="promo-1")
    again = await writer.grant(account_id, 50, idempotency_key="promo-1")
    with pytest.raises(ValidationError) as other:
        await writer.grant(account_id, 60, idempotency_key="promo-1")

    assert again == first
    assert list(other.value.errors) == ["Idempotency-Key"]


async def test_a_null_priority_counts_as_left_out_as_a_null_expiry_or_reason_does(
    http: httpx.AsyncClient, writer: LedgerClient, writer_headers: dict[str, str]
) -> None:
    """``"priority": null`` was 422 where a null ``expires_at`` or ``reason`` is left out:
    a client that writes every optional field (null when unset) could give no grant."""
    account_id = await open_account(writer, 0)

    given = await grant(
        http, writer_headers, account_id, {"amount": 10, "priority": None}, key="promo-null"
    )
    again = await grant(http, writer_headers, account_id, {"amount": 10}, key="promo-null")

    assert given.status_code == 201, given.text
    assert given.json()["priority"] == 50
    assert again.status_code == 201, again.text
    assert again.json() == given.json()  # the same request: the default either way


async def test_the_same_key_and_expiry_written_with_another_offset_is_the_same_grant(
    http: httpx.AsyncClient, writer: LedgerClient, writer_headers: dict[str, str]
) -> None:
    """The answer gives ``expires_at`` in UTC; a retry that sent the same instant so (or with
    another offset, or fraction digits) was refused as another request under the key (422)."""
    account_id = await open_account(writer, 0)
    body = {"amount": 5, "expires_at": "2030-01-01T01:00:00+01:00", "reason": "promo"}

    first = await grant(http, writer_headers, account_id, body, key="offsets")
    retries = [
        await grant(http, writer_headers, account_id, {**body, "expires_at": written}, "offsets")
        for written in ("2030-01-01T00:00:00Z", "2029-12-31T19:00:00.000-05:00")
    ]
    other = await grant(
        http, writer_headers, account_id, {**body, "expires_at": "2030-01-01T00:00:01Z"}, "offsets"
    )

    assert first.status_code == 201, first.text
    assert [(r.status_code, r.json()) for r in retries] == [(201, first.json())] * 2
    assert [r.headers.get("Idempotent-Replayed") for r in retries] == ["true"] * 2
    assert other.status_code == 422
    assert list(other.json()["errors"]) == ["Idempotency-Key"]


async def test_voiding_lapses_what_remains_and_a_second_void_is_409(
    writer: LedgerClient,
) -> None:
    account_id = await open_account(writer, 0)
    grant_id = (await writer.grant(account_id, 80)).grant_id

    voided = await writer.void_grant(account_id, grant_id, reason="withdrawn")
    with pytest.raises(Conflict):
        await writer.void_grant(account_id, grant_id)
    with pytest.raises(NotFound):
        await writer.void_grant(account_id, "grant_nope")

    assert (voided.status, voided.lapsed, voided.balance) == ("voided", 80, 0)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"amount": 0}, "amount", "The amount must be at least 1."),
        ({"amount": 1_000_000_001}, "amount", "The amount must not be greater than 1000000000."),
        ({}, "amount", "The amount field is required."),
        ({"amount": 5, "priority": 101}, "priority", "The priority must not be greater than 100."),
        (
            {"amount": 5, "expires_at": "tomorrow"},
            "expires_at",
            "The expires at must be an RFC 3339 time with an offset.",
        ),
        (
            {"amount": 5, "expires_at": "2020-01-01T00:00:00Z"},
            "expires_at",
            "A grant's expires_at must be in the future.",
        ),
        (  # past 9999 in UTC: its idempotency fingerprint, in UTC, was a 500
            {"amount": 5, "expires_at": "9999-12-31T23:30:00-01:00"},
            "expires_at",
            "A grant's expires_at must fall within the years 1 to 9999 in UTC.",
        ),
        (
            {"amount": 5, "expires_at": "0001-01-01T00:30:00+01:00"},
            "expires_at",
            "A grant's expires_at must fall within the years 1 to 9999 in UTC.",
        ),
    ],
)
async def test_bad_grants_are_422(
    http: httpx.AsyncClient,
    writer: LedgerClient,
    writer_headers: dict[str, str],
    body: dict[str, Any],
    field: str,
    message: str,
) -> None:
    account_id = await open_account(writer, 0)

    refused = await grant(http, writer_headers, account_id, body)

    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"] == {field: [message]}


async def test_a_grant_expiring_at_the_last_microsecond_of_9999_is_422(
    http: httpx.AsyncClient,
    writer: LedgerClient,
    writer_headers: dict[str, str],
    services: Services,
) -> None:
    account_id = await open_account(writer, 0)

    last = await grant(
        http, writer_headers, account_id, {"amount": 5, "expires_at": "9999-12-31T23:59:59.999999Z"}
    )
    before = await grant(
        http, writer_headers, account_id, {"amount": 5, "expires_at": "9999-12-31T23:59:59.999998Z"}
    )
    await caught_up(services.store)
    listed = await writer.list_grants(account_id)

    # Before: 201, and asyncpg wrote that instant into the grants view as PostgreSQL's infinity,
    # read back with no offset: the list showed "9999-12-31T23:59:59.999999" and audit verify
    # reported the view against the events.
    assert last.status_code == 422, last.text
    assert last.json()["errors"] == {
        "expires_at": ["A grant's expires_at must fall within the years 1 to 9999 in UTC."]
    }
    assert before.status_code == 201, before.text
    assert [g.expires_at for g in listed.data] == [
        datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=UTC)
    ]


async def test_an_account_s_grants_are_listed_by_status_with_what_remains_at_once(
    writer: LedgerClient, connect: Connect, services: Services
) -> None:
    auditor = connect((await services.tokens.issue(Scope.LEDGER_AUDIT, name="auditor")).secret)
    async with projector_running(services.store, services.database_url):
        await list_grants_while_projecting(writer, auditor)


async def list_grants_while_projecting(writer: LedgerClient, auditor: LedgerClient) -> None:
    account_id = await open_account(writer, 0)
    first = await writer.grant(account_id, 100, priority=1)
    second = await writer.grant(account_id, 40)
    await writer.spend(account_id, 30, reason="job")
    await writer.void_grant(account_id, second.grant_id)

    # No waiting for the projector: a caller reads its own grants, spends and voids.
    everything = await writer.list_grants(account_id)
    active = await auditor.list_grants(account_id, status="active")
    voided = await writer.list_grants(account_id, status="voided", limit=1)
    page = await writer.list_grants(account_id, limit=1)
    credits = await writer.get_credits(account_id)

    shown = [(g.grant_id, g.status, g.remaining) for g in everything.data]
    assert shown == [(second.grant_id, "voided", 0), (first.grant_id, "active", 70)]
    assert [g.grant_id for g in active.data] == [first.grant_id]
    assert [g.grant_id for g in voided.data] == [second.grant_id]
    assert voided.has_more is False
    assert page.has_more is True
    assert page.next_after is not None
    rest = await writer.list_grants(account_id, limit=1, after=page.next_after)
    assert [g.grant_id for g in rest.data] == [first.grant_id]
    assert (credits.granted, credits.balance) == (70, 70)


async def test_a_grant_answers_its_expiry_in_utc_as_the_list_shows_it(
    http: httpx.AsyncClient,
    writer: LedgerClient,
    writer_headers: dict[str, str],
    services: Services,
) -> None:
    """The grant's answer echoed the offset it was given ("2030-01-01T00:00:00+01:00") while
    the list showed the same expiry in UTC ("2029-12-31T23:00:00Z"), as every time the API
    answers: a client matching the two found two expiries."""
    account_id = await open_account(writer, 0)
    body = {"amount": 5, "expires_at": "2030-01-01T00:00:00+01:00"}

    async with projector_running(services.store, services.database_url):
        given = await grant(http, writer_headers, account_id, body)
        listed = await http.get(f"/v1/accounts/{account_id}/grants", headers=writer_headers)

    assert given.status_code == 201, given.text
    assert given.json()["expires_at"] == "2029-12-31T23:00:00Z"
    assert [g["expires_at"] for g in listed.json()["data"]] == ["2029-12-31T23:00:00Z"]


async def test_listing_grants_refuses_an_unknown_status_and_account(
    http: httpx.AsyncClient, writer: LedgerClient, writer_headers: dict[str, str]
) -> None:
    account_id = await open_account(writer, 0)

    bad = await http.get(
        f"/v1/accounts/{account_id}/grants?status=spent&limit=0", headers=writer_headers
    )
    unknown = await http.get("/v1/accounts/acct_nobody_here/grants", headers=writer_headers)

    assert bad.status_code == 422
    assert bad.json()["errors"] == {
        "status": ["The selected status is invalid. Choose from active, expired, voided, all."],
        "limit": ["The limit must be between 1 and 1000."],
    }
    assert unknown.status_code == 404


async def test_a_grant_past_its_expiry_is_out_of_every_balance_read_before_the_sweep(
    http: httpx.AsyncClient,
    writer: LedgerClient,
    writer_headers: dict[str, str],
    auditor_headers: dict[str, str],
    services: Services,
) -> None:
    """A spend decided after a grant's ``expires_at`` never uses it, swept or not; every
    balance read counted it in ``granted`` and ``available`` until the sweeper recorded its
    expiry (no projector runs here, so the sweeper, which finds due grants in the views, does
    not come: as with ``ledger serve``'s projector or sweeper stopped). The auditors' ``as_of``
    did the same for a moment after the expiry, before its record."""
    account_id = await open_account(writer, 0)
    await writer.grant(account_id, 40)
    expires = datetime.now(UTC) + timedelta(seconds=1)
    await writer.grant(account_id, 100, expires_at=expires, priority=0)
    customer = {
        "Authorization": "Bearer "
        + (await services.tokens.issue(Scope.CREDITS, account_id=account_id)).secret
    }
    await asyncio.sleep((expires - datetime.now(UTC)).total_seconds() + 0.05)

    internal = (await http.get(f"/v1/accounts/{account_id}/credits", headers=writer_headers)).json()
    own = (await http.get("/v1/credits", headers=customer)).json()
    as_of = {
        moment: (
            await http.get(
                f"/v1/accounts/{account_id}/credits",
                params={"as_of": moment.isoformat()},
                headers=auditor_headers,
            )
        ).json()
        for moment in (expires - timedelta(microseconds=1), expires)
    }
    refused = await http.post(
        f"/v1/accounts/{account_id}/spend",
        json={"amount": 41, "reason": "too much"},
        headers={**writer_headers, "Idempotency-Key": uuid.uuid4().hex},
    )

    shown = {"granted": 40, "balance": 40, "available": 40}
    assert {k: internal[k] for k in shown} == shown  # it said 140
    assert own == internal
    assert refused.status_code == 402
    just_before, at_expiry = as_of[expires - timedelta(microseconds=1)], as_of[expires]
    assert (just_before["granted"], at_expiry["granted"]) == (140, 40)
    assert at_expiry["version"] == just_before["version"]  # its expiry is not an event yet


async def test_an_expires_at_past_the_microsecond_is_cut_as_an_as_of_is(
    http: httpx.AsyncClient,
    writer: LedgerClient,
    writer_headers: dict[str, str],
    auditor_headers: dict[str, str],
) -> None:
    """RFC 3339 allows any number of fraction digits. A grant's ``expires_at`` was rounded to
    the nearest microsecond (as msgspec reads it) while ``as_of`` cuts them: an ``as_of`` at
    the very instant written as the grant's expiry found it still active, and the grant
    answered a later expiry than the one given. Both cut now (so does the CLI)."""
    account_id = await open_account(writer, 0)
    cut = datetime.now(UTC).replace(microsecond=123456) + timedelta(seconds=2)
    written = cut.strftime("%Y-%m-%dT%H:%M:%S.%f") + "9Z"  # rounded, it was 123457

    given = await grant(http, writer_headers, account_id, {"amount": 100, "expires_at": written})
    await asyncio.sleep((cut - datetime.now(UTC)).total_seconds() + 0.05)
    path = f"/v1/accounts/{account_id}/credits"
    at_expiry = await http.get(path, params={"as_of": written}, headers=auditor_headers)
    just_before = await http.get(
        path,
        params={"as_of": (cut - timedelta(microseconds=1)).isoformat()},
        headers=auditor_headers,
    )

    assert given.status_code == 201, given.text
    assert datetime.fromisoformat(given.json()["expires_at"]) == cut
    assert (just_before.json()["granted"], at_expiry.json()["granted"]) == (100, 0)


async def test_a_grant_expiring_at_a_leap_second_is_given_and_other_second_60s_are_422(
    http: httpx.AsyncClient, writer: LedgerClient, writer_headers: dict[str, str]
) -> None:
    """RFC 3339 writes a leap second as second 60 of 23:59 UTC on a month's last day
    (``2030-06-30T23:59:60Z``, or ``2030-07-01T01:59:60+02:00``). It was a 422 saying it was
    no RFC 3339 time; it is read as the last microsecond before it, as an ``as_of`` is."""
    account_id = await open_account(writer, 0)

    utc = await grant(
        http, writer_headers, account_id, {"amount": 5, "expires_at": "2030-06-30T23:59:60Z"}
    )
    offset = await grant(
        http,
        writer_headers,
        account_id,
        {"amount": 5, "expires_at": "2030-07-01T01:59:60.5+02:00"},
    )
    not_a_leap_second = await grant(
        http, writer_headers, account_id, {"amount": 5, "expires_at": "2030-06-29T23:59:60Z"}
    )

    assert utc.status_code == 201, utc.text
    assert offset.status_code == 201, offset.text
    assert utc.json()["expires_at"] == offset.json()["expires_at"] == "2030-06-30T23:59:59.999999Z"
    assert not_a_leap_second.status_code == 422, not_a_leap_second.text
    assert list(not_a_leap_second.json()["errors"]) == ["expires_at"]
