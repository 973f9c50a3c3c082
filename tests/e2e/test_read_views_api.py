"""GET /v1/credits, purchases and transactions read the projected views."""

from __future__ import annotations

import uuid

import httpx
import pytest

from api.services import Services
from tests.e2e.conftest import Customer
from tests.support.events import caught_up
from tests.support.projector import projector_running
from tests.support.stripe_events import checkout_session, event_body, signature


async def project(services: Services) -> None:
    await caught_up(services.store)


async def buy_and_pay(http: httpx.AsyncClient, customer: Customer, credits: int) -> str:
    response = await http.post(
        "/v1/credits/purchase", json={"credits": credits}, headers=customer.headers
    )
    session_id = str(response.json()["session_id"])
    body = event_body(
        "checkout.session.completed",
        checkout_session(session_id, account_id=customer.account_id, credits=credits),
    )
    delivered = await http.post(
        "/v1/stripe/webhook", content=body, headers={"Stripe-Signature": signature(body)}
    )
    assert delivered.status_code == 200
    return session_id


async def spend(http: httpx.AsyncClient, headers: dict[str, str], account_id: str, n: int) -> None:
    response = await http.post(
        f"/v1/accounts/{account_id}/spend",
        json={"amount": n, "reason": f"job {n}"},
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 200, response.text


async def test_credits_come_from_the_balances_view(
    http: httpx.AsyncClient, customer: Customer, services: Services, writer_headers: dict[str, str]
) -> None:
    await buy_and_pay(http, customer, 1000)
    await spend(http, writer_headers, customer.account_id, 1200)
    await project(services)

    body = (await http.get("/v1/credits", headers=customer.headers)).json()

    assert body["allowance_remaining"] == 0
    assert body["topup_balance"] == 800
    assert body["balance"] == 800
    internal = await http.get(f"/v1/accounts/{customer.account_id}/credits", headers=writer_headers)
    assert internal.json() == body


async def test_a_credits_read_right_after_a_write_shows_it(
    http: httpx.AsyncClient, customer: Customer, services: Services, writer_headers: dict[str, str]
) -> None:
    """The view is read as it stands; one that has not applied the account's last event yet
    (no projector runs here: as ``ledger serve``'s for the milliseconds after each write)
    showed the balance before the caller's own spend, hold or grant."""
    await project(services)
    account = f"/v1/accounts/{customer.account_id}"
    await spend(http, writer_headers, customer.account_id, 100)
    hold = await http.post(
        f"{account}/holds",
        json={"amount": 50},
        headers={**writer_headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert hold.status_code == 201, hold.text
    grant = await http.post(
        f"{account}/grants",
        json={"amount": 30},
        headers={**writer_headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert grant.status_code == 201, grant.text

    internal = (await http.get(f"{account}/credits", headers=writer_headers)).json()
    own = (await http.get("/v1/credits", headers=customer.headers)).json()

    expected = {"balance": 930, "held": 50, "available": 880, "granted": 30}
    assert {k: internal[k] for k in expected} == expected
    assert own == internal
    await project(services)  # and once the view has applied them, it answers the same
    assert (await http.get("/v1/credits", headers=customer.headers)).json() == own


async def test_the_customer_s_lists_show_its_own_writes_at_once(
    http: httpx.AsyncClient, customer: Customer, services: Services, writer_headers: dict[str, str]
) -> None:
    """With the projector running, as ``ledger serve`` runs it, but no waiting for it: the
    lists read the views as they stood, most of the time without the spend or purchase the
    caller had just made (the balance answers from the write side then)."""
    await project(services)
    async with projector_running(services.store, services.database_url):
        seen = []
        for n in range(1, 6):
            await spend(http, writer_headers, customer.account_id, n)
            bought = await http.post(
                "/v1/credits/purchase", json={"credits": 100 + n}, headers=customer.headers
            )
            lines = await http.get("/v1/credits/transactions", headers=customer.headers)
            purchases = await http.get("/v1/credits/purchases", headers=customer.headers)
            newest_line = next(iter(lines.json()["data"]), {})
            newest_purchase = next(iter(purchases.json()["data"]), {})
            seen.append(
                (
                    newest_line.get("description"),
                    newest_purchase.get("session_id") == bought.json()["session_id"],
                )
            )

    assert seen == [(f"job {n}", True) for n in range(1, 6)]


async def test_a_list_read_from_views_that_are_behind_says_so_as_every_read_says_where(
    http: httpx.AsyncClient,
    customer: Customer,
    services: Services,
    writer_headers: dict[str, str],
) -> None:
    """No projector runs here: the views never apply the spend and the grant. The balance
    answers from the write side (current); the lists, which have none, answered as the
    views stood without a word, and the grants list without ``Ledger-Read-From`` either
    (it read the primary's views on a road of its own, ignoring ``Ledger-Min-Position``)."""
    await project(services)
    account = f"/v1/accounts/{customer.account_id}"
    caught = {
        "transactions": await http.get("/v1/credits/transactions", headers=customer.headers),
        "grants": await http.get(f"{account}/grants", headers=writer_headers),
    }
    await spend(http, writer_headers, customer.account_id, 7)
    granted = await http.post(
        f"{account}/grants",
        json={"amount": 30},
        headers={**writer_headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert granted.status_code == 201, granted.text

    behind = {
        "transactions": await http.get("/v1/credits/transactions", headers=customer.headers),
        "grants": await http.get(f"{account}/grants", headers=writer_headers),
        "purchases": await http.get(
            "/v1/credits/purchases",
            headers={**customer.headers, "Ledger-Min-Position": granted.headers["Ledger-Position"]},
        ),
    }
    balance = await http.get(
        "/v1/credits",
        headers={**customer.headers, "Ledger-Min-Position": granted.headers["Ledger-Position"]},
    )

    for name, answer in {**caught, **behind}.items():
        assert answer.status_code == 200, (name, answer.text)
        assert answer.headers["Ledger-Read-From"] == "primary", name
    for name, answer in caught.items():
        assert "Ledger-Views-Behind" not in answer.headers, name
    for name, answer in behind.items():
        assert answer.headers.get("Ledger-Views-Behind") == "true", name
    assert behind["grants"].json()["data"] == []  # as the views stand: without the grant
    assert balance.json()["granted"] == 30  # from the write side: current, and not marked
    assert balance.headers["Ledger-Read-From"] == "primary"
    assert "Ledger-Views-Behind" not in balance.headers
    await project(services)
    again = await http.get(f"{account}/grants", headers=writer_headers)
    assert "Ledger-Views-Behind" not in again.headers
    assert [grant["amount"] for grant in again.json()["data"]] == [30]


async def test_purchases_list_newest_first_with_their_status(
    http: httpx.AsyncClient, customer: Customer, services: Services
) -> None:
    paid = await buy_and_pay(http, customer, 500)
    pending = (
        await http.post("/v1/credits/purchase", json={"credits": 200}, headers=customer.headers)
    ).json()["session_id"]
    await project(services)

    listed = (await http.get("/v1/credits/purchases", headers=customer.headers)).json()
    purchases = listed["data"]

    assert (listed["has_more"], listed["next_after"]) == (False, None)
    assert [(p["session_id"], p["status"], p["credits"]) for p in purchases] == [
        (pending, "pending", 200),
        (paid, "paid", 500),
    ]
    assert purchases[1]["paid_at"] is not None
    older = await http.get(
        "/v1/credits/purchases",
        params={"limit": 1, "after": purchases[0]["position"]},
        headers=customer.headers,
    )
    assert [p["session_id"] for p in older.json()["data"]] == [paid]
    first = await http.get("/v1/credits/purchases", params={"limit": 1}, headers=customer.headers)
    assert first.json()["has_more"] is True
    assert first.json()["next_after"] == purchases[0]["position"]


async def test_transactions_show_each_movement_with_the_balance_after(
    http: httpx.AsyncClient, customer: Customer, services: Services, writer_headers: dict[str, str]
) -> None:
    await buy_and_pay(http, customer, 300)
    await spend(http, writer_headers, customer.account_id, 1100)
    await project(services)

    page = (await http.get("/v1/credits/transactions", headers=customer.headers)).json()

    lines = [(line["type"], line["amount"], line["balance_after"]) for line in page["data"]]
    assert lines == [
        ("CreditsSpent", -1100, 200),
        ("CreditsPurchased", 300, 1300),
        ("AccountOpened", 1000, 1000),
    ]
    assert page["data"][0]["description"] == "job 1100"
    assert page["next_after"] is None

    first = (
        await http.get("/v1/credits/transactions", params={"limit": 2}, headers=customer.headers)
    ).json()
    rest = (
        await http.get(
            "/v1/credits/transactions",
            params={"limit": 2, "after": first["next_after"]},
            headers=customer.headers,
        )
    ).json()
    assert [line["type"] for line in first["data"] + rest["data"]] == [t for t, _, _ in lines]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 1001}, "limit"),
        ({"limit": 0}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"after": "x"}, "after"),
    ],
)
async def test_bad_paging_is_422(
    http: httpx.AsyncClient, customer: Customer, params: dict[str, object], field: str
) -> None:
    for path in ("/v1/credits/purchases", "/v1/credits/transactions"):
        response = await http.get(path, params=params, headers=customer.headers)
        assert response.status_code == 422
        assert field in response.json()["errors"]
