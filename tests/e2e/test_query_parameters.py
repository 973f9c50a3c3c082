"""Query parameters given twice: with different values they say no one thing (422), as a
body's field or a header given twice does; the same value twice is one."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import Customer
from tests.support.waiting import until

THEN = "2026-12-01T00:00:00Z"
LATER = "2026-12-02T00:00:00Z"


@pytest.mark.parametrize(
    ("who", "path", "query", "name"),
    [
        ("auditor", "/v1/events", "after=1&after=2", "after"),
        ("auditor", "/v1/accounts/{account}/events", "limit=1&limit=2", "limit"),
        ("auditor", "/v1/accounts/{account}/credits", f"as_of={THEN}&as_of={LATER}", "as_of"),
        ("writer", "/v1/accounts/{account}/grants", "status=active&status=voided", "status"),
        ("customer", "/v1/credits", f"as_of={THEN}&as_of={LATER}", "as_of"),
        ("customer", "/v1/credits/purchases", "limit=5&after=3&limit=6", "limit"),
        ("customer", "/v1/credits/transactions", "after=7&after=", "after"),
    ],
)
async def test_a_query_parameter_given_twice_with_different_values_is_422(
    http: httpx.AsyncClient,
    customer: Customer,
    writer_headers: dict[str, str],
    auditor_headers: dict[str, str],
    who: str,
    path: str,
    query: str,
    name: str,
) -> None:
    """``?after=1&after=2`` was answered after 2, ``?status=active&status=voided`` listed
    the voided grants: the last of them taken, without a word, as a JSON decoder takes the
    last of a field given twice."""
    headers = {"auditor": auditor_headers, "writer": writer_headers}.get(who, customer.headers)
    url = path.format(account=customer.account_id) + "?" + query

    answer = await http.get(url, headers=headers)

    assert answer.status_code == 422, answer.text
    message = f"The {name} parameter must be given once."
    assert answer.json() == {"message": message, "errors": {name: [message]}}


async def test_a_query_parameter_given_twice_with_the_same_value_is_one(
    http: httpx.AsyncClient, customer: Customer
) -> None:
    path = f"/v1/accounts/{customer.account_id}/events?limit=1&limit=1"
    answers: list[httpx.Response] = []

    async def read_the_opening() -> bool:
        # A page stops at its look's watermark, which a transaction of another database on
        # the same server can hold short of the account's opening for a moment.
        answers.append(await http.get(path, headers=customer.headers))
        return answers[-1].status_code != 200 or bool(answers[-1].json()["data"])

    await until(read_the_opening, what="the account's opening in its history")

    assert answers[-1].status_code == 200, answers[-1].text
    assert len(answers[-1].json()["data"]) == 1


async def test_a_caller_without_a_token_is_401_before_its_query_is_read(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.get("/v1/events?after=1&after=2")

    assert answer.status_code == 401
    assert answer.json() == {"message": "Unauthenticated."}


@pytest.mark.parametrize(
    ("who", "path", "name", "meant"),
    [
        ("customer", "/v1/credits", "AS_OF", "as_of"),
        ("customer", "/v1/credits", "as_off", "as_of"),
        ("auditor", "/v1/accounts/{account}/credits", "as-of", "as_of"),
        ("auditor", "/v1/events", "Limit", "limit"),
        ("customer", "/v1/credits/transactions", "afer", "after"),
        ("writer", "/v1/accounts/{account}/grants", "stauts", "status"),
    ],
)
async def test_a_query_parameter_named_almost_as_one_the_route_takes_is_422_naming_it(
    http: httpx.AsyncClient,
    customer: Customer,
    writer_headers: dict[str, str],
    auditor_headers: dict[str, str],
    who: str,
    path: str,
    name: str,
    meant: str,
) -> None:
    """``/v1/credits?AS_OF=2026-01-01T00:00:00Z`` (or ``as_off=``) answered today's balance,
    the parameter ignored: an auditor got another day's answer without a word."""
    headers = {"auditor": auditor_headers, "writer": writer_headers}.get(who, customer.headers)

    answer = await http.get(
        path.format(account=customer.account_id), params={name: THEN}, headers=headers
    )

    assert answer.status_code == 422, answer.text
    message = f"The {name} parameter is unknown; did you mean {meant}?"
    assert answer.json() == {"message": message, "errors": {name: [message]}}


@pytest.mark.parametrize("query", ["_=1733580000000", "utm_source=mail&cb=7", "v=2&t=x"])
async def test_a_query_parameter_named_as_none_the_route_takes_is_ignored(
    http: httpx.AsyncClient, customer: Customer, query: str
) -> None:
    """Browsers and proxies add cache-busters: only near misses of a route's own names are
    refused."""
    plain = await http.get("/v1/credits", headers=customer.headers)
    answer = await http.get(f"/v1/credits?{query}", headers=customer.headers)

    assert answer.status_code == 200, answer.text
    assert answer.json() == plain.json()
