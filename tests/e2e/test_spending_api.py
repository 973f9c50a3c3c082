"""Spending and monthly resets over HTTP: burn order, 402, idempotency, concurrency."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from api.services import Services
from ledger.domain.ids import account_stream_id
from tests.conftest import unique
from tests.support.events import stream_events
from tests.support.ledger import save


async def open_account(http: httpx.AsyncClient, headers: dict[str, str], allowance: int) -> str:
    account_id = unique("acct")
    response = await http.post(
        "/v1/accounts",
        json={"account_id": account_id, "monthly_allowance": allowance},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return account_id


async def spend(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    account_id: str,
    amount: int,
    key: str | None = None,
    reason: str = "api call",
) -> httpx.Response:
    return await http.post(
        f"/v1/accounts/{account_id}/spend",
        json={"amount": amount, "reason": reason},
        headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex},
    )


async def spent_events(services: Services, account_id: str) -> list[dict[str, object]]:
    events = await stream_events(services.store, account_stream_id(account_id))
    return [data for kind, data in events if kind == "CreditsSpent"]


async def test_a_spend_answers_the_balance_after_and_records_the_buckets(
    http: httpx.AsyncClient, writer_headers: dict[str, str], services: Services
) -> None:
    account_id = await open_account(http, writer_headers, 100)
    await services.ledger.account(account_id)
    account = await services.ledger.account(account_id)
    account.purchase(session_id="cs_test_direct", credits=50)
    await save(services.ledger, account)

    response = await spend(http, writer_headers, account_id, 120)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["from_allowance"], body["from_topup"]) == (100, 20)
    assert (body["allowance_remaining"], body["topup_balance"], body["balance"]) == (0, 30, 30)
    [recorded] = await spent_events(services, account_id)
    assert (recorded["from_allowance"], recorded["from_topup"]) == (100, 20)


async def test_a_short_balance_is_402_and_records_nothing(
    http: httpx.AsyncClient, writer_headers: dict[str, str], services: Services
) -> None:
    account_id = await open_account(http, writer_headers, 100)

    response = await spend(http, writer_headers, account_id, 101)

    assert response.status_code == 402
    assert response.json() == {"message": "Insufficient credits."}
    assert await spent_events(services, account_id) == []


async def test_a_repeated_key_returns_the_first_answer_and_records_nothing_new(
    http: httpx.AsyncClient, writer_headers: dict[str, str], services: Services
) -> None:
    account_id = await open_account(http, writer_headers, 100)

    first = await spend(http, writer_headers, account_id, 10, key="job-1")
    second = await spend(http, writer_headers, account_id, 10, key="job-1")
    different = await spend(http, writer_headers, account_id, 11, key="job-1")

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert different.status_code == 422
    assert "Idempotency-Key" in different.json()["errors"]
    assert len(await spent_events(services, account_id)) == 1


async def test_a_spend_needs_an_idempotency_key_and_a_whole_amount(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    account_id = await open_account(http, writer_headers, 100)
    path = f"/v1/accounts/{account_id}/spend"

    no_key = await http.post(path, json={"amount": 1}, headers=writer_headers)
    fraction = await spend(http, writer_headers, account_id, 1.5)  # type: ignore[arg-type]
    zero = await spend(http, writer_headers, account_id, 0)

    assert no_key.status_code == 422
    assert no_key.json()["errors"] == {
        "Idempotency-Key": ["The Idempotency-Key header is required."]
    }
    assert fraction.json()["errors"] == {"amount": ["The amount field must be an integer."]}
    assert zero.json()["errors"] == {"amount": ["The amount must be at least 1."]}


async def test_customer_and_auditor_tokens_cannot_spend(
    http: httpx.AsyncClient, writer_headers: dict[str, str], services: Services
) -> None:
    from api.access.tokens import Scope

    account_id = await open_account(http, writer_headers, 100)
    customer = await services.tokens.issue(Scope.CREDITS, account_id=account_id)
    auditor = await services.tokens.issue(Scope.LEDGER_AUDIT, name="auditor")

    for token in (customer.secret, auditor.secret):
        response = await spend(http, {"Authorization": f"Bearer {token}"}, account_id, 1)
        assert response.status_code == 403


async def test_spending_on_an_unknown_account_is_404(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    assert (await spend(http, writer_headers, "acct_nobody_here", 1)).status_code == 404


async def test_concurrent_spends_past_the_balance_succeed_exactly_as_far_as_it_goes(
    http: httpx.AsyncClient, writer_headers: dict[str, str], services: Services
) -> None:
    account_id = await open_account(http, writer_headers, 1000)

    responses = await asyncio.gather(
        *(spend(http, writer_headers, account_id, 15) for _ in range(100))
    )

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 402}
    assert statuses.count(200) == 1000 // 15
    account = await services.ledger.account(account_id)
    assert account.balance == 1000 - 15 * (1000 // 15)
    assert len(await spent_events(services, account_id)) == statuses.count(200)


async def test_monthly_reset_restores_the_allowance_and_spares_topups(
    http: httpx.AsyncClient, writer_headers: dict[str, str], services: Services
) -> None:
    account_id = await open_account(http, writer_headers, 1000)
    account = await services.ledger.account(account_id)
    account.purchase(session_id="cs_test_direct_2", credits=1000)
    await save(services.ledger, account)
    assert (await spend(http, writer_headers, account_id, 1500)).status_code == 200
    path = f"/v1/accounts/{account_id}/monthly-reset"

    reset = await http.post(path, json={"period": "2999-01"}, headers=writer_headers)
    again = await http.post(path, json={"period": "2999-01"}, headers=writer_headers)
    older = await http.post(path, json={"period": "2998-12"}, headers=writer_headers)
    bad = await http.post(path, json={"period": "2999-13"}, headers=writer_headers)

    assert reset.status_code == again.status_code == 200
    assert reset.json()["allowance_remaining"] == 1000
    assert reset.json()["topup_balance"] == 500
    assert again.json() == reset.json()
    assert older.status_code == 409
    assert bad.status_code == 422
    events = await stream_events(services.store, account_stream_id(account_id))
    assert [kind for kind, _ in events].count("MonthlyAllowanceReset") == 1


async def test_a_plan_change_takes_effect_at_the_next_reset(
    http: httpx.AsyncClient, writer_headers: dict[str, str]
) -> None:
    account_id = await open_account(http, writer_headers, 1000)

    changed = await http.patch(
        f"/v1/accounts/{account_id}", json={"monthly_allowance": 3000}, headers=writer_headers
    )
    reset = await http.post(
        f"/v1/accounts/{account_id}/monthly-reset",
        json={"period": "2999-02"},
        headers=writer_headers,
    )

    assert changed.json()["monthly_allowance"] == 1000
    assert changed.json()["next_monthly_allowance"] == 3000
    assert reset.json()["allowance_remaining"] == 3000
