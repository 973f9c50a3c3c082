"""Bodies the ledger will not guess at: compressed (415), not JSON (415), or giving a field
twice (422), each in the contract's shape with nothing recorded."""

from __future__ import annotations

import asyncio
import gzip
import uuid

import httpx
import msgspec
import pytest
from litestar import Litestar

from api.services import Services
from tests.e2e.conftest import Customer
from tests.support.events import events_since, tail_position
from tests.support.raw_http import open_account
from tests.support.stripe_events import event_body, signature


def keyed(headers: dict[str, str], **more: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": uuid.uuid4().hex, **more}


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
async def test_a_compressed_body_is_415_on_every_route_that_takes_one(
    http: httpx.AsyncClient,
    services: Services,
    customer: Customer,
    writer_headers: dict[str, str],
    encoding: str,
) -> None:
    account_id = await open_account(http, writer_headers, 1000)
    zipped = {"Content-Type": "application/json", "Content-Encoding": encoding}
    start = await tail_position(services.store)

    answers = [
        await http.post(
            f"/v1/accounts/{account_id}/spend",
            content=gzip.compress(b'{"amount": 5}'),
            headers=keyed(writer_headers, **zipped),
        ),
        # The bytes as if they were not compressed: the header is refused, not the body.
        await http.post(
            f"/v1/accounts/{account_id}/holds",
            content=b'{"amount": 5}',
            headers=keyed(writer_headers, **zipped),
        ),
        await http.post(
            "/v1/credits/purchase",
            content=gzip.compress(b'{"credits": 100}'),
            headers={**customer.headers, **zipped},
        ),
        await http.post(
            "/v1/accounts",
            content=b'{"account_id": "acct_zipped"}',
            headers={**writer_headers, **zipped},
        ),
    ]

    for answer in answers:
        assert answer.status_code == 415, (answer.request.url, answer.text)
        assert answer.json() == {
            "message": "The request body must be sent as it is: a Content-Encoding "
            "(compression) is not accepted."
        }
    assert await events_since(services.store, start) == []


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_json_sent_as_another_type_is_read_as_json(
    http: httpx.AsyncClient, services: Services, writer_headers: dict[str, str], content_type: str
) -> None:
    """curl -d sends a form's type: the contract has every body JSON, so it is read as such."""
    account_id = await open_account(http, writer_headers, 1000)
    start = await tail_position(services.store)

    answer = await http.post(
        f"/v1/accounts/{account_id}/spend",
        content=b'{"amount": 5}',
        headers=keyed(writer_headers, **{"Content-Type": content_type}),
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["balance"] == 995
    assert len(await events_since(services.store, start)) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Content-Type": "application/json; charset=utf-8"},
        {"Content-Encoding": "identity"},
        # A list of codings (RFC 9110, 8.4) that names none but identity: sent as it is.
        {"Content-Encoding": ""},
        {"Content-Encoding": "identity, identity"},
        {"Content-Encoding": "identity,"},
    ],
)
async def test_json_without_a_type_or_with_its_charset_is_taken(
    http: httpx.AsyncClient, writer_headers: dict[str, str], headers: dict[str, str]
) -> None:
    account_id = await open_account(http, writer_headers, 1000)

    answer = await http.post(
        f"/v1/accounts/{account_id}/spend",
        content=b'{"amount": 5}',
        headers=keyed(writer_headers, **headers),
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["balance"] == 995


async def test_a_stripe_delivery_is_verified_on_the_bytes_sent_whatever_its_headers_say(
    http: httpx.AsyncClient, services: Services
) -> None:
    """The contract: the signature is verified on the raw body (400 when it fails), and
    every verified event is 200. Nothing is decompressed before the check."""
    delivery = event_body("customer.created", {"id": "cus_1", "object": "customer"})
    start = await tail_position(services.store)

    as_text = await http.post(
        "/v1/stripe/webhook",
        content=delivery.encode(),
        headers={"Stripe-Signature": signature(delivery), "Content-Type": "text/plain"},
    )
    zipped = await http.post(
        "/v1/stripe/webhook",
        content=gzip.compress(delivery.encode()),
        headers={"Stripe-Signature": signature(delivery), "Content-Encoding": "gzip"},
    )

    assert as_text.status_code == 200, as_text.text
    assert zipped.status_code == 400, zipped.text
    assert zipped.json()["message"].startswith("Invalid Stripe webhook")
    assert await events_since(services.store, start) == []


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("spend", b'{"amount": 5, "amount": 900}', "amount"),
        ("spend", b'{"amount": 5, "\\u0061mount": 900}', "amount"),
        ("holds", b'{"amount": 5, "reason": "a", "amount": 900}', "amount"),
        ("grants", b'{"amount": 5, "priority": 1, "priority": 99}', "priority"),
        # Beside bytes that are no UTF-8 in a field msgspec skips unread: it spent 900.
        ("spend", b'{"amount": 5, "amount": 900, "x": "\xff"}', "amount"),
    ],
)
async def test_a_field_given_twice_is_422_and_nothing_recorded(
    http: httpx.AsyncClient,
    services: Services,
    writer_headers: dict[str, str],
    path: str,
    body: bytes,
    field: str,
) -> None:
    """msgspec keeps the last of them: ``{"amount": 5, "amount": 900}`` spent 900."""
    account_id = await open_account(http, writer_headers, 1000)
    start = await tail_position(services.store)

    answer = await http.post(
        f"/v1/accounts/{account_id}/{path}",
        content=body,
        headers=keyed(writer_headers, **{"Content-Type": "application/json"}),
    )

    assert answer.status_code == 422, answer.text
    message = f"The {field} field must be given once."
    assert answer.json() == {"message": message, "errors": {field: [message]}}
    assert await events_since(services.store, start) == []


async def test_a_purchase_giving_its_credits_twice_is_422(
    http: httpx.AsyncClient, customer: Customer
) -> None:
    answer = await http.post(
        "/v1/credits/purchase",
        content=b'{"credits": 100, "credits": 10000}',
        headers={**customer.headers, "Content-Type": "application/json"},
    )

    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"] == {"credits": ["The credits field must be given once."]}


@pytest.mark.parametrize(
    ("digits", "message"),
    [
        ("9" * 5000, "The amount must not be greater than 1000000000000."),
        ("-" + "9" * 5000, "The amount must be at least 1."),
    ],
)
async def test_an_amount_written_in_thousands_of_digits_is_422_naming_the_amount(
    http: httpx.AsyncClient,
    services: Services,
    writer_headers: dict[str, str],
    digits: str,
    message: str,
) -> None:
    """A JSON integer may have any number of digits (RFC 8259): one past what msgspec reads
    was answered "The request body must be valid JSON.", as a 26-digit one is not."""
    account_id = await open_account(http, writer_headers, 1000)
    start = await tail_position(services.store)

    answer = await http.post(
        f"/v1/accounts/{account_id}/spend",
        content=b'{"amount": ' + digits.encode() + b', "reason": "r"}',
        headers=keyed(writer_headers, **{"Content-Type": "application/json"}),
    )

    assert answer.status_code == 422, answer.text
    assert answer.json() == {"message": message, "errors": {"amount": [message]}}
    assert await events_since(services.store, start) == []


@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate, chunked"])
async def test_a_body_sent_with_a_transfer_coding_other_than_chunked_is_415(
    ledger_app: Litestar,
    http: httpx.AsyncClient,
    services: Services,
    writer_headers: dict[str, str],
    coding: str,
) -> None:
    """``Transfer-Encoding: gzip, chunked``: the server takes the chunks apart and hands on
    what they hold, still compressed; the bytes were read as JSON whatever they were (a
    client that labelled plain JSON so was recorded). Refused as a Content-Encoding is."""
    account_id = await open_account(http, writer_headers, 1000)
    start = await tail_position(services.store)
    body = b'{"amount": 5}'
    url = httpx.URL(ledger_app.state.base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        f"POST /v1/accounts/{account_id}/spend HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: {writer_headers['Authorization']}\r\n"
        f"Idempotency-Key: {uuid.uuid4().hex}\r\nContent-Type: application/json\r\n"
        f"Transfer-Encoding: {coding}\r\n\r\n".encode()
        + b"%x\r\n" % len(body)
        + body
        + b"\r\n0\r\n\r\n"
    )
    try:
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()

    head, _, content = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 415"), answer
    assert msgspec.json.decode(content) == {
        "message": "The request body must be sent as it is: a Transfer-Encoding other than "
        "chunked is not accepted."
    }
    assert await events_since(services.store, start) == []


@pytest.mark.parametrize("path", ["/grants/grant_nope/void", "/monthly-reset"])
async def test_a_body_left_out_where_it_may_be_is_no_error_beside_a_bad_key(
    http: httpx.AsyncClient, writer_headers: dict[str, str], path: str
) -> None:
    """A void and a monthly reset take no body at all; with a malformed Idempotency-Key
    the 422 also said "The request body must be a JSON object." of the body never sent
    (Litestar, listing every field of the route, counted the absent optional body as one)."""
    account_id = await open_account(http, writer_headers, 1000)

    answer = await http.post(
        f"/v1/accounts/{account_id}{path}", headers={**writer_headers, "Idempotency-Key": ""}
    )

    assert answer.status_code == 422, answer.text
    assert list(answer.json()["errors"]) == ["Idempotency-Key"]
    assert answer.json()["message"] == answer.json()["errors"]["Idempotency-Key"][0]


@pytest.mark.parametrize(
    ("path", "body", "key", "field"),
    [
        ("/holds", {"amount": 0}, None, "amount"),
        ("/grants", {"amount": 0}, None, "amount"),
        ("/spend", {"amount": "5"}, "", "amount"),
        ("/holds/hold_nope/capture", {"amount": -1}, "a\tb", "amount"),
    ],
)
async def test_a_bad_body_and_a_bad_idempotency_key_are_both_listed(
    http: httpx.AsyncClient,
    writer_headers: dict[str, str],
    path: str,
    body: dict[str, object],
    key: str | None,
    field: str,
) -> None:
    """The contract's 422 has one entry per bad field; a body refused listed its own
    fields only, so a caller who fixed them was refused again for the key."""
    account_id = await open_account(http, writer_headers, 1000)
    headers = {**writer_headers, **({} if key is None else {"Idempotency-Key": key})}

    answer = await http.post(f"/v1/accounts/{account_id}{path}", json=body, headers=headers)

    assert answer.status_code == 422, answer.text
    assert list(answer.json()["errors"]) == [field, "Idempotency-Key"]
    assert answer.json()["errors"]["Idempotency-Key"] == [
        "The Idempotency-Key header is required."
        if key is None
        else "The Idempotency-Key header must be 1 to 255 printable ASCII characters."
    ]
