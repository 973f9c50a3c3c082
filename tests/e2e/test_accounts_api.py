"""Opening accounts and reading balances over HTTP (internal services)."""

from __future__ import annotations

import httpx

from tests.conftest import unique
from tests.e2e.conftest import Customer


async def test_opening_an_account_gives_its_whole_allowance_at_once(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    account_id = unique("acct")

    response = await http.post(
        "/v1/accounts",
        json={"account_id": account_id, "monthly_allowance": 5000},
        headers=writer_headers,
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["account_id"] == account_id
    assert body["monthly_allowance"] == body["allowance_remaining"] == body["balance"] == 5000
    assert body["topup_balance"] == 0
    assert len(body["period"]) == 7


async def test_opening_an_existing_account_is_409(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    payload = {"account_id": unique("acct"), "monthly_allowance": 10}
    await http.post("/v1/accounts", json=payload, headers=writer_headers)

    again = await http.post("/v1/accounts", json=payload, headers=writer_headers)

    assert again.status_code == 409
    assert again.json() == {"message": "The account already exists."}


async def test_the_allowance_defaults_when_left_out(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    response = await http.post(
        "/v1/accounts", json={"account_id": unique("acct")}, headers=writer_headers
    )

    assert response.status_code == 201
    assert response.json()["monthly_allowance"] == 1000


async def test_bad_account_fields_are_422_each_named(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    response = await http.post(
        "/v1/accounts",
        json={"account_id": "has space", "monthly_allowance": -1},
        headers=writer_headers,
    )

    assert response.status_code == 422
    errors = response.json()["errors"]
    assert set(errors) == {"account_id", "monthly_allowance"}
    assert errors["monthly_allowance"] == ["The monthly allowance must be at least 0."]


async def test_a_customer_token_cannot_open_accounts(
    http: httpx.AsyncClient, customer: Customer
) -> None:
    response = await http.post(
        "/v1/accounts", json={"account_id": unique("acct")}, headers=customer.headers
    )

    assert response.status_code == 403


async def test_customers_read_their_own_credits(
    http: httpx.AsyncClient, customer: Customer
) -> None:
    response = await http.get("/v1/credits", headers=customer.headers)

    assert response.status_code == 200
    assert response.json() == {
        "account_id": customer.account_id,
        "balance": 1000,
        "monthly_allowance": 1000,
        "allowance_remaining": 1000,
        "topup_balance": 0,
        "period": response.json()["period"],
        "held": 0,
        "granted": 0,
        "available": 1000,
    }


async def test_internal_services_read_any_account_but_customers_only_their_own(
    http: httpx.AsyncClient, customer: Customer, writer_headers: dict[str, str]
) -> None:
    path = f"/v1/accounts/{customer.account_id}/credits"

    assert (await http.get(path, headers=writer_headers)).status_code == 200
    assert (await http.get(path, headers=customer.headers)).status_code == 200
    other = await http.get("/v1/accounts/acct_someone_else/credits", headers=customer.headers)
    assert other.status_code == 403


async def test_an_unknown_account_is_404(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    response = await http.get("/v1/accounts/acct_nobody/credits", headers=writer_headers)

    assert response.status_code == 404
    assert response.json() == {"message": "Account not found."}


async def test_health_and_readiness(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).json() == {"status": "ready"}
    # Some load balancers probe with HEAD: it was a 405 (a review).
    for path in ("/healthz", "/readyz"):
        probed = await http.head(path)
        assert (probed.status_code, probed.content) == (200, b"")


async def test_metrics_are_prometheus_text(http: httpx.AsyncClient) -> None:
    await http.get("/healthz")

    response = await http.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'ledger_http_requests_total{method="GET",status="200"}' in response.text
    assert "ledger_store_head_position " in response.text


async def test_the_openapi_document_lists_the_purchase_endpoint(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/schema/openapi.json")).json()

    assert "/v1/credits/purchase" in schema["paths"]


async def test_unknown_paths_answer_json_404(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/nothing-here")

    assert response.status_code == 404
    assert response.json() == {"message": "Not found."}
