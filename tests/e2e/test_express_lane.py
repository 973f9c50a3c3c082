"""The express lane answers exactly as Litestar alone does (api/express.py).

The suite's API runs with the lane; a second API on the same database runs without it
(``create_app(..., express_lane=False)``). Each gets the same requests, on accounts of
its own opened alike, and every answer must match: status, headers and body, but for
the request id, the positions and the account ids.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import msgspec
import pytest
from litestar import Litestar

from api.access.tokens import Scope
from api.services import Services
from stripe_standin import RunningStandin
from tests.conftest import unique
from tests.e2e.conftest import served_api
from tests.support.ledger import open_account
from tests.support.stripe_events import event_body, signature

VARYING = {"date", "server", "x-request-id", "ledger-position"}
"""Headers that differ between any two answers (``ledger-position``: only its presence
is compared)."""


@pytest.fixture(scope="module")
async def litestar_alone(database_url: str, standin: RunningStandin) -> AsyncIterator[str]:
    """The API without the express lane, on the suite's database; its base URL."""
    async with served_api(database_url, standin, express_lane=False) as app:
        yield app.state.base_url


class Side:
    """One API and an account of its own, with a customer token for it."""

    def __init__(self, http: httpx.AsyncClient, account_id: str, customer_token: str) -> None:
        self.http = http
        self.account_id = account_id
        self.customer = {"Authorization": f"Bearer {customer_token}"}
        self.hold_ids: list[str] = []

    def comparable(self, response: httpx.Response) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in response.headers.items() if k not in VARYING}
        if "ledger-position" in response.headers:
            headers["ledger-position"] = "present"
        body = response.content.replace(self.account_id.encode(), b"ACCOUNT")
        for hold_id in self.hold_ids:
            body = body.replace(hold_id.encode(), b"HOLD")
        if b'"hold_id"' in body:  # expiring from when it was placed
            hold = msgspec.json.decode(body)
            body = msgspec.json.encode({**hold, "expires_at": "WHEN"})
        return response.status_code, headers, body


async def side(services: Services, http: httpx.AsyncClient) -> Side:
    account_id = unique("acct")  # the same length on both sides
    await open_account(services.ledger, account_id, 100)
    token = await services.tokens.issue(Scope.CREDITS, account_id=account_id)
    return Side(http, account_id, token.secret)


async def exchanges(one: Side, writer: dict[str, str]) -> list[httpx.Response]:
    """The same requests for either side: the happy paths and the refusals around them."""
    event_id = unique("evt_test")  # each side's delivery is new to the store
    spend = f"/v1/accounts/{one.account_id}/spend"
    mine = f"/v1/accounts/{one.account_id}/credits"
    key = {**writer, "Idempotency-Key": "spend-1"}
    delivery = event_body("customer.created", {"id": "cus_1", "object": "customer"}, event_id)
    signed = {"Stripe-Signature": signature(delivery), "Content-Type": "application/json"}
    writer_key = [*writer.items(), ("Idempotency-Key", "a")]
    two_keys = [("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    two_positions = [("Ledger-Min-Position", "1"), ("Ledger-Min-Position", "2")]
    http = one.http
    return [
        await http.post(spend, json={"amount": 30, "reason": "a"}, headers=key),
        await http.post(spend, json={"amount": 30, "reason": "a"}, headers=key),  # replayed
        await http.post(spend, json={"amount": 31, "reason": "a"}, headers=key),  # key reused
        await http.post(
            spend,
            content=b'{"amount": 1}',
            headers={**writer, "Idempotency-Key": "plain", "Content-Type": "text/plain"},
        ),
        await http.post(spend, json={"amount": 500}, headers={**writer, "Idempotency-Key": "k2"}),
        await http.post(spend, json={"amount": "5"}, headers={**writer, "Idempotency-Key": "k3"}),
        await http.post(spend, content=b"{", headers={**writer, "Idempotency-Key": "k3"}),
        await http.post(spend, json={"amount": 5}, headers=writer),  # no Idempotency-Key
        await http.post(spend, json={"amount": 5}, headers={**writer, "Idempotency-Key": ""}),
        await http.post(spend, json={"amount": 5}, headers={"Idempotency-Key": "k4"}),
        await http.post(
            spend, json={"amount": 5}, headers={**one.customer, "Idempotency-Key": "k"}
        ),
        await http.post(
            "/v1/accounts/acct_nobodyhome/spend",
            json={"amount": 5},
            headers={**writer, "Idempotency-Key": "k5"},
        ),
        await http.post(spend, content=b" " * 300_000, headers={**writer, "Idempotency-Key": "k6"}),
        await http.get(mine, headers=writer),
        await http.get(mine, params={"as_of": "2020-01-01T00:00:00Z"}, headers=writer),
        await http.get(mine, headers=one.customer),
        await http.get("/v1/accounts/acct_nobodyhome/credits", headers=writer),
        await http.get("/v1/credits", headers=one.customer),
        await http.get("/v1/credits", headers={**one.customer, "Ledger-Min-Position": "1"}),
        await http.get("/v1/credits", headers={**one.customer, "Ledger-Min-Position": "x"}),
        await http.get("/v1/credits", headers=writer),
        await http.get("/v1/credits", headers={"Authorization": "Bearer ldg_nope_nope"}),
        await http.get("/v1/credits"),
        await http.post("/v1/stripe/webhook", content=delivery.encode(), headers=signed),
        await http.post("/v1/stripe/webhook", content=delivery.encode(), headers=signed),
        await http.post(
            "/v1/stripe/webhook",
            content=delivery.encode(),
            headers={**signed, "Stripe-Signature": signature(delivery, "whsec_other")},
        ),
        await http.post("/v1/stripe/webhook", content=delivery.encode()),
        await http.post("/v1/stripe/webhook", content=b"", headers=signed),
        await http.post(
            spend,
            content=gzip.compress(b'{"amount": 1}'),
            headers={**writer, "Idempotency-Key": "zipped", "Content-Encoding": "gzip"},
        ),
        await http.post(
            spend,
            content=b'{"amount": 1, "amount": 60}',
            headers={**writer, "Idempotency-Key": "twice", "Content-Type": "application/json"},
        ),
        await http.post(
            "/v1/stripe/webhook",
            content=gzip.compress(delivery.encode()),
            headers={**signed, "Content-Encoding": "gzip"},
        ),
        # A header given twice: with another value it says no one thing; the same again is one.
        await http.post(spend, json={"amount": 1}, headers=[*writer_key, ("Idempotency-Key", "b")]),
        await http.post(spend, json={"amount": 1}, headers=[*writer_key, ("Idempotency-Key", "a")]),
        await http.post(spend, json={"amount": 1}, headers=[*writer_key, *writer_key]),
        await http.post(spend, json={"amount": 1}, headers=[*two_keys, ("Authorization", "x")]),
        await http.get(mine, headers=[*writer.items(), ("Authorization", "Bearer ldg_nope_nope")]),
        await http.get(mine, headers=[*writer.items(), *writer.items()]),
        await http.get("/v1/credits", headers=[*one.customer.items(), *two_positions]),
        await http.get("/v1/credits", headers=[*one.customer.items(), *two_positions[:1] * 2]),
    ]


Exchanges = Callable[[Side, dict[str, str]], Awaitable[list[httpx.Response]]]


async def both_answer(
    ledger_app: Litestar, litestar_alone: str, services: Services, exchanges: Exchanges
) -> list[httpx.Response]:
    """``exchanges`` sent to both APIs, each on an account of its own; the lane's answers,
    once each matched the one Litestar alone gave."""
    writer_token = await services.tokens.issue(Scope.LEDGER_WRITE, name="express parity")
    writer = {"Authorization": f"Bearer {writer_token.secret}"}
    async with (
        httpx.AsyncClient(base_url=ledger_app.state.base_url, timeout=30) as laned_http,
        httpx.AsyncClient(base_url=litestar_alone, timeout=30) as plain_http,
    ):
        laned = await side(services, laned_http)
        plain = await side(services, plain_http)
        laned_answers = await exchanges(laned, writer)
        plain_answers = await exchanges(plain, writer)
    for number, (mine, theirs) in enumerate(zip(laned_answers, plain_answers, strict=True)):
        assert laned.comparable(mine) == plain.comparable(theirs), (number, mine.request.url)
    return laned_answers


async def test_the_express_lane_answers_as_litestar_alone_does(
    ledger_app: Litestar, litestar_alone: str, services: Services
) -> None:
    laned_answers = await both_answer(ledger_app, litestar_alone, services, exchanges)

    statuses = [answer.status_code for answer in laned_answers]
    assert statuses == [
        200, 200, 422, 200, 402, 422, 422, 422, 422, 401, 403, 404, 413,
        200, 404, 200, 404, 200, 200, 422, 403, 401, 401,
        200, 200, 400, 400, 400, 415, 422, 400,
        422, 200, 200, 401, 401, 200, 422, 200,
    ]  # fmt: skip
    assert laned_answers[1].headers["idempotent-replayed"] == "true"
    assert laned_answers[18].headers["ledger-read-from"] == "primary"
    assert laned_answers[31].json() == {
        "message": "The Idempotency-Key header must be given once.",
        "errors": {"Idempotency-Key": ["The Idempotency-Key header must be given once."]},
    }
    assert laned_answers[33].headers["idempotent-replayed"] == "true"
    assert laned_answers[37].json()["errors"] == {
        "Ledger-Min-Position": ["The Ledger-Min-Position header must be given once."]
    }


async def hold_exchanges(one: Side, writer: dict[str, str]) -> list[httpx.Response]:
    """Holds placed, captured and released, and the refusals around them."""
    holds = f"/v1/accounts/{one.account_id}/holds"
    http = one.http
    place = {**writer, "Idempotency-Key": "hold-1"}
    placed = await http.post(holds, json={"amount": 30, "reason": "render"}, headers=place)
    hold = f"{holds}/{placed.json()['hold_id']}"
    second = await http.post(
        holds, json={"amount": 20}, headers={**writer, "Idempotency-Key": "h2"}
    )
    one.hold_ids += [placed.json()["hold_id"], second.json()["hold_id"]]
    released = f"{holds}/{second.json()['hold_id']}/release"
    return [
        placed,
        await http.post(holds, json={"amount": 30, "reason": "render"}, headers=place),
        second,
        await http.post(holds, json={"amount": 500}, headers={**writer, "Idempotency-Key": "h3"}),
        await http.post(holds, json={"amount": 0}, headers={**writer, "Idempotency-Key": "h4"}),
        await http.post(holds, json={"amount": 5}, headers=writer),  # no Idempotency-Key
        await http.post(
            holds, json={"amount": 5}, headers={**one.customer, "Idempotency-Key": "k"}
        ),
        await http.post(f"{hold}/capture", json={"amount": 40}, headers=writer),
        await http.post(f"{hold}/capture", json={"amount": "25"}, headers=writer),
        await http.post(f"{hold}/capture", json={"amount": 25}, headers=writer),
        await http.post(f"{hold}/capture", json={"amount": 25}, headers=writer),  # again
        await http.post(f"{hold}/capture", json={"amount": 10}, headers=writer),  # settled
        await http.post(f"{hold}/release", headers=writer),
        await http.post(released, headers={**writer, "Idempotency-Key": "r1"}),
        await http.post(released, headers={**writer, "Idempotency-Key": "r1"}),  # again
        await http.post(released, headers={**writer, "Idempotency-Key": "k" * 300}),
        await http.post(f"{holds}/hold_nobody/capture", json={"amount": 1}, headers=writer),
        await http.post(f"{holds}/hold_nobody/release", headers=writer),
    ]


async def test_holds_in_the_express_lane_answer_as_litestar_alone_does(
    ledger_app: Litestar, litestar_alone: str, services: Services
) -> None:
    laned_answers = await both_answer(ledger_app, litestar_alone, services, hold_exchanges)

    statuses = [answer.status_code for answer in laned_answers]
    assert statuses == [201, 201, 201, 402, 422, 422, 403, 422, 422, 200, 200, 409, 409,
                        200, 200, 422, 404, 404]  # fmt: skip
    assert laned_answers[1].headers["idempotent-replayed"] == "true"


@pytest.mark.parametrize("path", ["/v1/accounts/{account_id}/spend", "/v1/stripe/webhook"])
async def test_a_body_declared_over_the_limit_is_413_at_once_in_the_express_lane(
    ledger_app: Litestar, litestar_alone: str, services: Services, path: str
) -> None:
    """Litestar answers from ``Content-Length`` before reading; the lane waited for the
    body itself, so a client that declared 100 MB and sent 2 bytes got no answer."""
    token = (await services.tokens.issue(Scope.LEDGER_WRITE, name="declared")).secret
    account_id = unique("acct")
    await open_account(services.ledger, account_id, 100)
    path = path.format(account_id=account_id)
    for base_url in (ledger_app.state.base_url, litestar_alone):
        status_line = await _status_line_of_declared(base_url, path, token, "100000000")

        assert status_line.startswith(b"HTTP/1.1 413"), (base_url, status_line)


async def _status_line_of_declared(base_url: str, path: str, token: str, length: str) -> bytes:
    """The status line answering a POST of ``{}`` whose ``Content-Length`` says ``length``."""
    host, port = httpx.URL(base_url).host, httpx.URL(base_url).port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nIdempotency-Key: k\r\n"
        f"Content-Length: {length}\r\n\r\n{{}}".encode()
    )
    try:
        return await asyncio.wait_for(reader.readline(), timeout=5)
    finally:
        writer.close()


@pytest.mark.parametrize("path", ["/v1/accounts/{account_id}/spend", "/v1/stripe/webhook"])
async def test_a_length_declared_in_thousands_of_digits_is_answered_as_litestar_alone_does(
    ledger_app: Litestar, litestar_alone: str, services: Services, path: str
) -> None:
    """A ``Content-Length`` of 2 written with 5,000 leading zeros passes the HTTP parser;
    int() refuses a text of over 4,300 digits, and the lane answered 500."""
    token = (await services.tokens.issue(Scope.LEDGER_WRITE, name="declared")).secret
    account_id = unique("acct")
    await open_account(services.ledger, account_id, 100)
    path = path.format(account_id=account_id)
    status_lines = [
        await _status_line_of_declared(base_url, path, token, f"{'0' * 5000}2")
        for base_url in (ledger_app.state.base_url, litestar_alone)
    ]

    laned, alone = status_lines
    assert laned == alone, status_lines
    assert alone.startswith(b"HTTP/1.1 4"), alone


async def test_an_answer_of_either_is_replayed_by_the_other_byte_for_byte(
    ledger_app: Litestar, litestar_alone: str, services: Services
) -> None:
    """A command answered by the lane and repeated where it does not run (another replica,
    the lane off), and the reverse: the same status and body, the repeat marked replayed.
    Repeats sent to both at once apply once."""
    writer_token = await services.tokens.issue(Scope.LEDGER_WRITE, name="express replays")
    writer = {"Authorization": f"Bearer {writer_token.secret}"}
    account_id = unique("acct")
    await open_account(services.ledger, account_id, 1000)
    base = f"/v1/accounts/{account_id}"
    async with (
        httpx.AsyncClient(base_url=ledger_app.state.base_url, timeout=30) as laned,
        httpx.AsyncClient(base_url=litestar_alone, timeout=30) as plain,
    ):

        async def twice(
            first: httpx.AsyncClient, then: httpx.AsyncClient, path: str, body: object, key: str
        ) -> list[httpx.Response]:
            headers = {**writer, "Idempotency-Key": key}
            return [await client.post(path, json=body, headers=headers) for client in (first, then)]

        held, other = (
            await twice(laned, plain, f"{base}/holds", {"amount": 30}, "hold-1"),
            await twice(plain, laned, f"{base}/holds", {"amount": 20}, "hold-2"),
        )
        hold, other_hold = held[0].json()["hold_id"], other[0].json()["hold_id"]
        pairs = [
            await twice(laned, plain, f"{base}/spend", {"amount": 5, "reason": "a"}, "spend-1"),
            await twice(plain, laned, f"{base}/spend", {"amount": 6}, "spend-2"),
            held,
            other,
            await twice(laned, plain, f"{base}/holds/{hold}/capture", {"amount": 25}, "c-1"),
            await twice(plain, laned, f"{base}/holds/{other_hold}/release", None, "r-1"),
        ]
        raced = await asyncio.gather(
            *(
                client.post(
                    f"{base}/spend",
                    json={"amount": 7},
                    headers={**writer, "Idempotency-Key": "spend-raced"},
                )
                for client in (laned, plain) * 5
            )
        )

    for first, again in pairs:
        assert first.status_code in (200, 201), first.text
        assert (again.status_code, again.content) == (first.status_code, first.content)
        assert (first.headers.get("idempotent-replayed"), again.headers["idempotent-replayed"]) == (
            None,
            "true",
        )
    assert {(r.status_code, r.content) for r in raced} == {(200, raced[0].content)}
    assert [r.headers.get("idempotent-replayed") for r in raced].count("true") == 9
    balance = await services.ledger.account(account_id, fresh=True)
    assert balance.balance == 1000 - 5 - 6 - 25 - 7
