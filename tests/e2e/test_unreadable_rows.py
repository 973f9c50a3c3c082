"""A store row the API cannot read (written by hand, or by a bad migration) is shown in the
auditors' event feeds as unreadable, with the reason in one line: the feeds answered 500 at
its page, for good, so no auditor could read past it. ``ledger audit verify`` names the row
and the projector stops at it; the feeds, which show events as stored, show the rest."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from api.access.tokens import Scope
from api.services import Services
from ledger.domain.ids import account_stream_id
from stripe_standin import RunningStandin
from tests.conftest import fresh_database
from tests.e2e.conftest import served_api
from tests.support.ledger import open_account
from tests.support.waiting import until

_INSERT = """INSERT INTO stored_events (originator_id, originator_version, topic, state, hash)
             VALUES ($1, $2, $3, $4, '\\x00') RETURNING notification_id"""


async def _feeds(
    postgres_server_url: str, standin: RunningStandin, rows: list[tuple[int, str, bytes]]
) -> tuple[dict[str, Any], httpx.Response, httpx.Response, list[int]]:
    """``rows`` (version, topic, state) appended by hand to acct_hand's stream; the global
    feed's and the account's feed's answers."""
    async with fresh_database(postgres_server_url) as url, served_api(url, standin) as app:
        services: Services = app.state.services
        stream = account_stream_id("acct_hand")
        await open_account(services.ledger, "acct_hand", 100)
        admin = await asyncpg.connect(url)
        try:
            positions = [
                await admin.fetchval(_INSERT, stream, version, topic, state)
                for version, topic, state in rows
            ]
        finally:
            await admin.close()
        auditor = await services.tokens.issue(Scope.LEDGER_AUDIT, name="auditor")
        headers = {"Authorization": f"Bearer {auditor.secret}"}
        async with httpx.AsyncClient(base_url=app.state.base_url, timeout=30) as http:
            answers: list[httpx.Response] = []

            async def both_reach_the_last_row() -> bool:
                answers[:] = [
                    await http.get("/v1/events", headers=headers),
                    await http.get("/v1/accounts/acct_hand/events", headers=headers),
                ]
                return any(a.status_code != 200 for a in answers) or all(
                    reaches(a, positions[-1]) for a in answers
                )

            await until(both_reach_the_last_row, what="the feeds reaching the rows")
            feed, account = answers
    assert feed.status_code == 200, feed.text
    return feed.json(), feed, account, positions


def reaches(feed: httpx.Response, position: int) -> bool:
    """Whether a feed's page reached ``position``: a page stops at its look's watermark,
    which a transaction of another database can hold short of the last rows for a moment."""
    return any(e["position"] == position for e in feed.json()["data"])


async def test_a_row_whose_state_is_not_json_is_shown_as_unreadable(
    postgres_server_url: str, standin: RunningStandin
) -> None:
    body, feed, account, [bad, after] = await _feeds(
        postgres_server_url,
        standin,
        [
            (2, "ledger.domain.events:CreditsSpent", b'{"amount": 1'),
            (3, "ledger.domain.events:CreditsSpent", b"\xff\xfe not UTF-8"),
        ],
    )

    assert account.status_code == 200, account.text
    assert account.json()["data"] == body["data"]
    events = {e["position"]: e for e in body["data"]}
    assert events[bad]["data"] is None
    assert events[bad]["type"] == "CreditsSpent"
    assert events[bad]["version"] == 2
    assert events[bad]["stream"] == "account/acct_hand"
    assert events[bad]["unreadable"].startswith("the stored state is not JSON: ")
    assert "\n" not in events[bad]["unreadable"]
    assert events[after]["data"] is None
    assert "unreadable" in events[after]
    # Readable events do not carry the field.
    assert [set(e) for e in body["data"] if e["position"] not in (bad, after)] == [
        {"position", "stream", "stream_id", "version", "type", "recorded_at", "data", "hash"}
    ]
    assert feed.headers["content-type"].startswith("application/json")


async def test_a_row_whose_state_is_json_but_not_an_object_is_shown_as_unreadable(
    postgres_server_url: str, standin: RunningStandin
) -> None:
    body, _, _, [bad] = await _feeds(
        postgres_server_url, standin, [(2, "ledger.domain.events:CreditsSpent", b"[1, 2]")]
    )

    [shown] = [e for e in body["data"] if e["position"] == bad]
    assert shown["data"] is None
    assert shown["unreadable"] == "the stored state is not a JSON object: it is an array"


async def test_a_row_whose_json_holds_a_string_that_is_not_utf8_is_shown_as_unreadable(
    postgres_server_url: str, standin: RunningStandin
) -> None:
    """msgspec raises UnicodeDecodeError, no DecodeError, for such a string: the feeds
    answered 500 at its page."""
    body, _, account, [bad] = await _feeds(
        postgres_server_url,
        standin,
        [(2, "ledger.domain.events:CreditsSpent", b'{"amount": 1, "reason": "\xff"}')],
    )

    assert account.status_code == 200, account.text
    [shown] = [e for e in body["data"] if e["position"] == bad]
    assert shown["data"] is None
    assert shown["unreadable"].startswith("the stored state is not JSON: "), shown
    assert "\n" not in shown["unreadable"]


async def test_a_row_of_a_topic_this_code_does_not_know_is_shown_as_stored(
    postgres_server_url: str, standin: RunningStandin
) -> None:
    body, _, _, [other] = await _feeds(
        postgres_server_url, standin, [(2, "elsewhere.events:SomethingHappened", b'{"x": 1}')]
    )

    [shown] = [e for e in body["data"] if e["position"] == other]
    assert shown["type"] == "SomethingHappened"
    assert shown["data"] == {"x": 1}
    assert "unreadable" not in shown


async def test_a_stream_whose_first_row_cannot_be_read_is_named_by_its_id(
    postgres_server_url: str, standin: RunningStandin
) -> None:
    """The feed names a stream after its first event's field (``account/acct_...``); a first
    row must be JSON (an index reads its account_id), but need not be an object."""
    async with fresh_database(postgres_server_url) as url, served_api(url, standin) as app:
        services: Services = app.state.services
        admin = await asyncpg.connect(url)
        try:
            stream = account_stream_id("acct_first_bad")
            position = await admin.fetchval(
                _INSERT, stream, 1, "ledger.domain.events:AccountOpened", b"[]"
            )
        finally:
            await admin.close()
        auditor = await services.tokens.issue(Scope.LEDGER_AUDIT, name="auditor")
        headers = {"Authorization": f"Bearer {auditor.secret}"}
        async with httpx.AsyncClient(base_url=app.state.base_url, timeout=30) as http:
            answers: list[httpx.Response] = []

            async def reaches_the_row() -> bool:
                answers[:] = [await http.get("/v1/events", headers=headers)]
                return answers[0].status_code != 200 or reaches(answers[0], position)

            await until(reaches_the_row, what="the feed reaching the row")
            [feed] = answers

    assert feed.status_code == 200, feed.text
    [row] = [e for e in feed.json()["data"] if e["position"] == position]
    assert row["stream"] == f"stream/{stream}"
    assert row["data"] is None


async def test_an_account_whose_stream_cannot_be_loaded_is_a_503_in_the_contracts_shape(
    postgres_server_url: str, standin: RunningStandin, caplog: pytest.LogCaptureFixture
) -> None:
    """Every command on the account, and every read of it from its events, answered 500
    "Server Error." with a traceback of the mapper's frames, request after request."""
    caplog.set_level(logging.ERROR, logger="api.errors")
    async with fresh_database(postgres_server_url) as url, served_api(url, standin) as app:
        services: Services = app.state.services
        await open_account(services.ledger, "acct_unloadable", 100)
        admin = await asyncpg.connect(url)
        try:
            position = await admin.fetchval(
                _INSERT,
                account_stream_id("acct_unloadable"),
                2,
                "ledger.domain.events:CreditsSpent",
                b'{"amount": "lots"}',
            )
        finally:
            await admin.close()
        writer = await services.tokens.issue(Scope.LEDGER_WRITE, name="writer")
        auditor = await services.tokens.issue(Scope.LEDGER_AUDIT, name="auditor")
        headers = {"Authorization": f"Bearer {writer.secret}"}
        path = "/v1/accounts/acct_unloadable"
        async with httpx.AsyncClient(base_url=app.state.base_url, timeout=30) as http:
            answers = [
                await http.post(
                    f"{path}/spend",
                    json={"amount": 1, "reason": "x"},
                    headers={**headers, "Idempotency-Key": "k1"},
                ),
                await http.post(
                    f"{path}/holds",
                    json={"amount": 1, "expires_in_seconds": 60, "reason": "x"},
                    headers={**headers, "Idempotency-Key": "k2"},
                ),
                await http.post(
                    f"{path}/monthly-reset", json={"period": "2099-01"}, headers=headers
                ),
                await http.get(f"{path}/credits", headers=headers),
                await http.get(
                    f"{path}/credits",
                    params={"as_of": datetime.now(UTC).isoformat()},
                    headers={"Authorization": f"Bearer {auditor.secret}"},
                ),
            ]

    for answer in answers:
        assert answer.status_code == 503, (answer.request.url, answer.text)
        assert answer.json() == {
            "message": "The ledger cannot read the history this request needs; nothing was "
            "recorded. It stays unavailable until an operator repairs it."
        }
    said = [r for r in caplog.records if r.name == "api.errors"]
    assert said
    assert all(r.exc_info is None for r in said)
    assert f"its event at position {position} (CreditsSpent, version 2)" in said[0].getMessage()
    assert "ValidationError: Expected `int`, got `str`" in said[0].getMessage()
