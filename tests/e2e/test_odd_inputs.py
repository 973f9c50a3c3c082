"""Odd inputs a fuzzing review found answered with a 500, or accepted and then fatal to the
views: each is a 4xx in the contract's JSON shape (``{"message": ..., "errors"?: {...}}``)
with nothing recorded, and the views still apply every event after it.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from api.services import Services
from ledger.domain.ids import account_stream_id, checkout_stream_id
from tests.conftest import unique
from tests.e2e.conftest import Customer
from tests.support.events import caught_up, stream_events
from tests.support.ledger import open_account
from tests.support.stripe_events import charge, checkout_session, dispute, event_body, signature

WEBHOOK = "/v1/stripe/webhook"


def assert_contract_error(answer: httpx.Response, *statuses: int) -> dict[str, Any]:
    """A 4xx of ``statuses`` whose body is the contract's error shape."""
    assert answer.status_code in statuses, (answer.status_code, answer.text[:300])
    body = answer.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("message"), str), body
    assert set(body) <= {"message", "errors"}, body
    if "errors" in body:
        assert isinstance(body["errors"], dict), body
    return body


async def event_types(services: Services, account_id: str) -> list[str]:
    return [t for t, _ in await stream_events(services.store, account_stream_id(account_id))]


# --- 1. Ledger-Min-Position with a Latin-1 superscript digit: 500 ---------------------------


@pytest.mark.parametrize("value", [b"\xb2", b"\xb3", b"\xb9", b"1\xb2"])
async def test_a_superscript_digit_in_ledger_min_position_is_422(
    http: httpx.AsyncClient, customer: Customer, value: bytes
) -> None:
    # "\xb2" is Latin-1 "²": str.isdigit() says yes, int() refuses (api/read_side.py).
    answer = await http.get(
        "/v1/credits", headers={**customer.headers, "Ledger-Min-Position": value}
    )

    body = assert_contract_error(answer, 422)
    assert "Ledger-Min-Position" in body["errors"]


# --- 2. as_of whose UTC instant is before year 1: 500 -------------------------------------


@pytest.mark.parametrize(
    "as_of",
    ["0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00+23:59", "0001-01-01T05:00:00+05:00:01"],
)
async def test_an_as_of_before_year_one_in_utc_is_not_a_500(
    http: httpx.AsyncClient,
    services: Services,
    auditor_headers: dict[str, str],
    as_of: str,
) -> None:
    account_id = unique("acct")
    await open_account(services.ledger, account_id, 100)

    answer = await http.get(
        f"/v1/accounts/{account_id}/credits", params={"as_of": as_of}, headers=auditor_headers
    )

    # As "0001-01-01T00:00:00Z" is answered: the account did not exist then (404), or a
    # 422 for an as_of PostgreSQL cannot hold.
    assert_contract_error(answer, 404, 422)


@pytest.mark.parametrize(
    "as_of",
    ["0001-01-01T00:00:00Z", "0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59-01:00"],
)
async def test_an_as_of_outside_the_range_held_is_422_saying_the_range(
    http: httpx.AsyncClient, customer: Customer, auditor_headers: dict[str, str], as_of: str
) -> None:
    answer = await http.get(
        f"/v1/accounts/{customer.account_id}/credits",
        params={"as_of": as_of},
        headers=auditor_headers,
    )

    # It said "must be an RFC 3339 time", which each of them is.
    body = assert_contract_error(answer, 422)
    range_said = (
        "The as of must be later than 0001-01-01T00:00:00Z and earlier than "
        "9999-12-31T23:59:59.999999Z."
    )
    assert body == {"message": range_said, "errors": {"as_of": [range_said]}}


@pytest.mark.parametrize(
    "as_of",
    [
        "2026-01-01T00:59:59.5+00:59:59.5",  # an offset with seconds
        "2026-01-01T00:00:00+00:60",
        "2026-W01-4T00:00:00Z",  # ISO 8601's week date
        "20260101T000000Z",
        "2026-01-01T00:00Z",
    ],
)
async def test_an_as_of_that_is_not_rfc_3339_is_422(
    http: httpx.AsyncClient, customer: Customer, auditor_headers: dict[str, str], as_of: str
) -> None:
    answer = await http.get(
        f"/v1/accounts/{customer.account_id}/credits",
        params={"as_of": as_of},
        headers=auditor_headers,
    )

    # Before: each was read by datetime.fromisoformat and answered (here 404, the account
    # opened later); an offset with seconds was replayed at its instant and echoed in
    # "as_of" rounded to minutes, which is another instant.
    body = assert_contract_error(answer, 422)
    assert body["errors"] == {
        "as_of": ["The as of must be an RFC 3339 time with an offset, e.g. 2026-11-25T12:00:00Z."]
    }


# --- 3. A NUL character in a path parameter: 500 -----------------------------------------


@pytest.mark.parametrize(
    ("method", "template", "needs_key"),
    [
        ("GET", "/v1/accounts/{nul}/credits", False),
        ("POST", "/v1/accounts/{nul}/spend", True),
        ("POST", "/v1/accounts/{nul}/holds", True),
        ("POST", "/v1/accounts/{nul}/grants", True),
        ("GET", "/v1/accounts/{acct}/holds/{nul}", False),
        ("POST", "/v1/accounts/{acct}/holds/{nul}/capture", False),
        ("POST", "/v1/accounts/{acct}/holds/{nul}/release", False),
        ("DELETE", "/v1/webhook-endpoints/{nul}", False),
    ],
)
async def test_a_nul_in_a_path_parameter_is_not_a_500(
    http: httpx.AsyncClient,
    services: Services,
    writer_headers: dict[str, str],
    method: str,
    template: str,
    needs_key: bool,
) -> None:
    account_id = unique("acct")
    await open_account(services.ledger, account_id, 100)
    path = template.format(nul="acct%00x", acct=account_id)
    headers = {**writer_headers, **({"Idempotency-Key": uuid.uuid4().hex} if needs_key else {})}
    body = {"amount": 1} if method == "POST" and "release" not in path else None

    answer = await http.request(method, path, json=body, headers=headers)

    assert_contract_error(answer, 404, 422)  # no such account, hold or endpoint
    assert await event_types(services, account_id) == ["AccountOpened"]


async def test_a_nul_in_an_account_id_is_not_a_500_on_the_event_feed(
    http: httpx.AsyncClient, auditor_headers: dict[str, str]
) -> None:
    answer = await http.get("/v1/accounts/acct%00x/events", headers=auditor_headers)

    assert_contract_error(answer, 404)  # no id holds a NUL


# --- 4. Deeply nested JSON bodies: 500 (RecursionError) ------------------------------------

DEEP = b"[" * 50_000 + b"]" * 50_000
NESTED = b'{"amount": 1, "credits": 100, "x": ' + DEEP + b"}"


@pytest.mark.parametrize("body", [DEEP, NESTED], ids=["deep-array", "deep-field"])
@pytest.mark.parametrize(
    ("method", "template", "who"),
    [
        ("POST", "/v1/accounts/{acct}/spend", "writer"),
        ("POST", "/v1/accounts/{acct}/holds", "writer"),
        ("POST", "/v1/accounts/{acct}/grants", "writer"),
        ("POST", "/v1/accounts", "writer"),
        ("POST", "/v1/accounts/{acct}/monthly-reset", "writer"),
        ("PATCH", "/v1/accounts/{acct}", "writer"),
        ("PUT", "/v1/accounts/{acct}/low-balance-threshold", "writer"),
        ("POST", "/v1/webhook-endpoints", "writer"),
        ("POST", "/v1/credits/purchase", "customer"),
    ],
)
async def test_a_deeply_nested_body_is_422(
    http: httpx.AsyncClient,
    services: Services,
    writer_headers: dict[str, str],
    customer: Customer,
    method: str,
    template: str,
    who: str,
    body: bytes,
) -> None:
    headers = writer_headers if who == "writer" else customer.headers
    answer = await http.request(
        method,
        template.format(acct=customer.account_id),
        content=body,
        headers={
            **headers,
            "Content-Type": "application/json",
            "Idempotency-Key": uuid.uuid4().hex,
        },
    )

    assert_contract_error(answer, 422)
    assert await event_types(services, customer.account_id) == ["AccountOpened"]


async def test_a_signed_stripe_event_with_a_deeply_nested_field_is_not_a_500(
    http: httpx.AsyncClient,
) -> None:
    body = (
        b'{"id": "evt_deep_' + uuid.uuid4().hex.encode() + b'", "type": "customer.created", '
        b'"data": {"object": {"id": "cus_1"}}, "extra": ' + DEEP + b"}"
    )
    answer = await http.post(
        WEBHOOK,
        content=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": signature(body.decode())},
    )

    # The contract: 200 for every verified event, handled or not (and for what is none).
    assert answer.status_code == 200, answer.text
    answer.json()


async def test_a_signed_event_of_a_type_not_acted_on_is_200_without_a_data_object(
    http: httpx.AsyncClient,
) -> None:
    """The contract: 200 for every verified event, handled or not. One of a type the ledger
    does not act on, without ``data`` (a thin event) or with an empty one, was 400."""
    answers = []
    for data in ("", ', "data": {}', ', "data": null'):
        body = (
            f'{{"id": "evt_thin_{uuid.uuid4().hex}", "object": "event", '
            f'"type": "v1.billing.meter.error_report_triggered"{data}}}'
        )
        answers.append(
            await http.post(
                WEBHOOK,
                content=body,
                headers={"Content-Type": "application/json", "Stripe-Signature": signature(body)},
            )
        )

    assert [(a.status_code, a.json()) for a in answers] == [(200, {"received": True})] * 3


# --- 5. A period written with non-ASCII digits is accepted, then blocks every reset ------


async def test_a_period_with_non_ascii_digits_is_422_and_resets_stay_possible(
    http: httpx.AsyncClient, services: Services, writer_headers: dict[str, str]
) -> None:
    account_id = unique("acct")
    await open_account(services.ledger, account_id, 100)

    # "٢٠٢٦-12": Arabic-Indic digits, matched by \d in PERIOD_PATTERN.
    answer = await http.post(
        f"/v1/accounts/{account_id}/monthly-reset",
        json={"period": "\u0662\u0660\u0662\u0666-12"},
        headers=writer_headers,
    )

    assert_contract_error(answer, 422)
    assert await event_types(services, account_id) == ["AccountOpened"]
    later = await http.post(
        f"/v1/accounts/{account_id}/monthly-reset",
        json={"period": "9999-12"},
        headers=writer_headers,
    )
    assert later.status_code == 200, later.text


# --- 6. A webhook endpoint URL ending in a newline ----------------------------------------


async def test_a_webhook_url_ending_in_a_newline_is_422(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    # URL_PATTERN ends in "$", which re.search matches before a final "\n".
    answer = await http.post(
        "/v1/webhook-endpoints",
        json={"url": "https://hooks.example.com/ledger\n", "events": ["credits.spent"]},
        headers=writer_headers,
    )

    assert_contract_error(answer, 422)


async def test_a_webhook_url_ending_in_a_newline_is_422_where_addresses_are_checked(
    http: httpx.AsyncClient, services: Services, writer_headers: dict[str, str]
) -> None:
    # As in production (LEDGER_WEBHOOK_ALLOW_PRIVATE unset): check_url() parses the URL.
    object.__setattr__(services, "webhook_allow_private", False)
    try:
        answer = await http.post(
            "/v1/webhook-endpoints",
            json={"url": "http://1.1.1.1/ledger\n", "events": ["credits.spent"]},
            headers=writer_headers,
        )
    finally:
        object.__setattr__(services, "webhook_allow_private", True)

    assert_contract_error(answer, 422)


# --- 7. Signed Stripe events with a superscript digit where an integer goes: 500 ----------


@pytest.mark.parametrize(
    ("change", "credited"),
    [
        ({"metadata": "credits"}, 0),
        ({"amount_total": "\u00b2"}, 0),
        ({"expires_at": "\u00b3"}, 1000),  # paid all the same: its expiry does not matter
    ],
    ids=["metadata.credits", "amount_total", "expires_at"],
)
async def test_a_signed_checkout_event_with_a_superscript_digit_is_not_a_500(
    http: httpx.AsyncClient,
    customer: Customer,
    services: Services,
    change: dict[str, str],
    credited: int,
) -> None:
    session_id = "cs_test_fuzz_" + uuid.uuid4().hex
    session = checkout_session(session_id, account_id=customer.account_id, credits=1000)
    if "metadata" in change:
        session["metadata"] = {"account_id": customer.account_id, "credits": "\u00b2"}
    else:
        session.update(change)
    body = event_body("checkout.session.completed", session)

    answer = await http.post(
        WEBHOOK,
        content=body.encode(),
        headers={"Content-Type": "application/json", "Stripe-Signature": signature(body)},
    )

    assert answer.status_code == 200, answer.text
    answer.json()
    assert (await services.ledger.account(customer.account_id)).topup_balance == credited


# --- 8. Accepted, then the projector could not apply it -----------------------------------


async def test_a_grant_expiring_after_year_9999_in_utc_is_refused_not_left_to_the_views(
    http: httpx.AsyncClient, services: Services, writer_headers: dict[str, str]
) -> None:
    account_id = unique("acct")
    await open_account(services.ledger, account_id, 100)

    # 9999-12-31T23:59:59-23:59 is 10000-01-01T23:58:59Z: Python holds it with its offset,
    # PostgreSQL's timestamptz (and asyncpg's encoder) cannot.
    answer = await http.post(
        f"/v1/accounts/{account_id}/grants",
        json={"amount": 10, "expires_at": "9999-12-31T23:59:59-23:59"},
        headers={**writer_headers, "Idempotency-Key": uuid.uuid4().hex},
    )

    assert_contract_error(answer, 422)
    assert await event_types(services, account_id) == ["AccountOpened"]
    await caught_up(services.store)  # recorded, it had stopped the views


async def test_a_signed_checkout_for_more_credits_than_a_bigint_does_not_stop_the_views(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    # A paid session the store never saw is credited from its metadata (as the suite's
    # test_a_paid_session_the_store_never_saw_is_credited_from_its_metadata does).
    session_id = "cs_test_fuzz_" + uuid.uuid4().hex
    credits = 2**63
    session = checkout_session(session_id, account_id=customer.account_id, credits=credits)
    body = event_body("checkout.session.completed", session)

    answer = await http.post(
        WEBHOOK,
        content=body.encode(),
        headers={"Content-Type": "application/json", "Stripe-Signature": signature(body)},
    )

    assert answer.status_code == 200, answer.text
    # Nothing the views cannot hold is credited (the contract's purchases are 100-10,000).
    assert (await services.ledger.account(customer.account_id)).topup_balance == 0
    assert await stream_events(services.store, checkout_stream_id(session_id)) == []
    await caught_up(services.store)  # recorded, it had stopped the views


# --- 9. Signed Stripe events with a number of more digits than Python reads: 500 ---------

TOO_MANY_DIGITS = "1" * 5000  # int() refuses a text of more than 4,300 digits (ValueError)


def _unreadable_number(kind: str, account_id: str) -> tuple[str, dict[str, Any]]:
    """A signed event of ``kind`` with a number written in too many digits."""
    intent = f"pi_test_fuzz_{uuid.uuid4().hex}"
    if kind in ("metadata.credits", "metadata.unit_amount"):
        session = checkout_session(
            "cs_test_fuzz_" + uuid.uuid4().hex, account_id=account_id, credits=1000
        )
        session["metadata"][kind.removeprefix("metadata.")] = TOO_MANY_DIGITS
        return "checkout.session.completed", session
    if kind == "amount_refunded":
        refunded = charge(intent, amount=1000)
        refunded["amount_refunded"] = TOO_MANY_DIGITS
        return "charge.refunded", refunded
    disputed = dispute(f"dp_test_{uuid.uuid4().hex}", intent, amount=1000, status="lost")
    disputed["amount"] = TOO_MANY_DIGITS
    return "charge.dispute.closed", disputed


@pytest.mark.parametrize(
    ("kind", "credited"),
    [
        ("metadata.credits", 0),
        # Read as none: the price now, as for a session made before metadata named one.
        ("metadata.unit_amount", 1000),
        ("amount_refunded", 0),
        ("dispute.amount", 0),
    ],
)
async def test_a_signed_event_with_a_number_of_thousands_of_digits_is_not_a_500(
    http: httpx.AsyncClient, customer: Customer, services: Services, kind: str, credited: int
) -> None:
    event_type, obj = _unreadable_number(kind, customer.account_id)
    body = event_body(event_type, obj)

    answer = await http.post(
        WEBHOOK,
        content=body.encode(),
        headers={"Content-Type": "application/json", "Stripe-Signature": signature(body)},
    )

    assert answer.status_code == 200, answer.text
    assert (await services.ledger.account(customer.account_id)).topup_balance == credited


@pytest.mark.parametrize("port", ["0", "99999", "00000"])
async def test_a_webhook_url_on_a_port_no_address_has_is_422(
    http: httpx.AsyncClient, writer_headers: dict[str, str], port: str
) -> None:
    answer = await http.post(
        "/v1/webhook-endpoints",
        json={"url": f"https://hooks.example.com:{port}/ledger", "events": ["credits.spent"]},
        headers=writer_headers,
    )

    body = assert_contract_error(answer, 422)
    assert body["errors"] == {"url": ["The url field must be a valid URL (http or https)."]}


async def test_a_webhook_url_on_the_last_port_is_taken(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    answer = await http.post(
        "/v1/webhook-endpoints",
        json={"url": "https://hooks.example.com:65535/ledger", "events": ["credits.spent"]},
        headers=writer_headers,
    )

    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("HTTPS://hooks.example.com/ledger", "https://hooks.example.com/ledger"),  # RFC 3986
        ("Http://hooks.example.com/ledger", "http://hooks.example.com/ledger"),
        ("https://[2001:db8::1]/ledger", "https://[2001:db8::1]/ledger"),
        ("HTTPS://[2001:db8::1]:8443/ledger", "https://[2001:db8::1]:8443/ledger"),
    ],
)
async def test_a_webhook_url_with_an_upper_case_scheme_or_an_ipv6_host_is_taken(
    http: httpx.AsyncClient, writer_headers: dict[str, str], url: str, stored: str
) -> None:
    answer = await http.post(
        "/v1/webhook-endpoints",
        json={"url": url, "events": ["credits.spent"]},
        headers=writer_headers,
    )

    assert answer.status_code == 201, answer.text
    assert answer.json()["url"] == stored


@pytest.mark.parametrize(
    "url",
    [
        "https://[2001:db8::zz]/ledger",
        "https://[192.0.2.1]/ledger",
        "HTTP://[C.]:65534",  # schemathesis's, from a looser pattern: schema-valid, then 422
        "https://[1::2::3]/ledger",
    ],
)
async def test_a_webhook_url_with_brackets_round_no_ipv6_address_is_422(
    http: httpx.AsyncClient, writer_headers: dict[str, str], url: str
) -> None:
    answer = await http.post(
        "/v1/webhook-endpoints",
        json={"url": url, "events": ["credits.spent"]},
        headers=writer_headers,
    )

    body = assert_contract_error(answer, 422)
    assert body["errors"] == {"url": ["The url field must be a valid URL (http or https)."]}


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("https://127.0.0.1/ledger", "127.0.0.1, which is not a public address (loopback)"),
        ("https://[::1]/ledger", "::1, which is not a public address (loopback)"),
        (
            "HTTPS://[::ffff:10.0.0.7]/ledger",
            "which is not a public address (private)",
        ),
        ("https://[fe80::1]/ledger", "fe80::1, which is not a public address (link-local)"),
        ("https://[2606:4700::1111]/ledger", None),
        ("HTTPS://8.8.8.8/ledger", None),
    ],
)
async def test_ipv6_and_upper_case_webhook_urls_are_checked_as_ipv4_ones_are(
    http: httpx.AsyncClient,
    services: Services,
    writer_headers: dict[str, str],
    url: str,
    refused: str | None,
) -> None:
    # As in production (LEDGER_WEBHOOK_ALLOW_PRIVATE unset): a literal asks no DNS.
    object.__setattr__(services, "webhook_allow_private", False)
    try:
        answer = await http.post(
            "/v1/webhook-endpoints",
            json={"url": url, "events": ["credits.spent"]},
            headers=writer_headers,
        )
    finally:
        object.__setattr__(services, "webhook_allow_private", True)

    if refused is None:
        assert answer.status_code == 201, answer.text
        assert answer.json()["url"] == "https://" + url.partition("://")[2]
    else:
        body = assert_contract_error(answer, 422)
        message = body["errors"]["url"][0]
        assert message.startswith("The url must be on a public address: ")
        assert refused in message


# --- A webhook URL whose host is no DNS name: it could never be delivered to ---------------

LABEL_63 = "a" * 63
NAME_253 = ".".join([LABEL_63, LABEL_63, LABEL_63, "b" * 61])  # 63*3 + 61 + 3 dots = 253


@pytest.mark.parametrize(
    "url",
    [
        "http://.../ledger",
        "http://./ledger",
        "http://a..b/ledger",
        "http://.example.com/ledger",
        "http://-a-/ledger",
        "http://a-.example.com/ledger",
        "http://-a.example.com/ledger",
        f"http://{LABEL_63}a.example.com/ledger",  # a label of 64 characters
        f"http://{NAME_253}c/ledger",  # 254 characters
        f"http://{NAME_253}c./ledger",
        "http://hooks~1.example.com/ledger",
        "http://1.2.3.999/ledger",  # RFC 1123 2.1: a host name's last label is not all digits
        "http://01.2.3.4/ledger",
        "http://127.1/ledger",
        "http://1.2.3.4./ledger",
    ],
)
async def test_a_webhook_url_whose_host_is_no_dns_name_is_422(
    http: httpx.AsyncClient, writer_headers: dict[str, str], url: str
) -> None:
    # The suite runs with LEDGER_WEBHOOK_ALLOW_PRIVATE=1: no lookup would catch these.
    answer = await http.post(
        "/v1/webhook-endpoints",
        json={"url": url, "events": ["credits.spent"]},
        headers=writer_headers,
    )

    body = assert_contract_error(answer, 422)
    assert body["errors"] == {"url": ["The url field must be a valid URL (http or https)."]}


@pytest.mark.parametrize(
    "url",
    [
        f"http://{LABEL_63}.example.com/ledger",
        f"http://{NAME_253}/ledger",
        f"http://{NAME_253}./ledger",  # the root's dot is not counted
        "https://hooks.example.com./ledger",
        "HTTP://Hooks-1.Example.COM:8443/ledger?x=1",
        "http://billing_hooks_1/ledger",  # Docker Compose names resolve
        "http://localhost/ledger",
        "http://a/ledger",
        "http://1.2.3.4/ledger",
        "http://255.255.255.255:80/ledger",
        "http://3com.example/ledger",
        "http://1.2.3.x4/ledger",
    ],
)
async def test_a_webhook_url_whose_host_is_a_dns_name_or_an_address_is_taken(
    http: httpx.AsyncClient, writer_headers: dict[str, str], url: str
) -> None:
    answer = await http.post(
        "/v1/webhook-endpoints",
        json={"url": url, "events": ["credits.spent"]},
        headers=writer_headers,
    )

    assert answer.status_code == 201, answer.text
