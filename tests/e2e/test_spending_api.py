"""Spending and monthly resets over HTTP: burn order, 402, idempotency, concurrency.

Normal calls go through the Python client (clients/python), as internal services
make them; bodies and headers the client cannot send stay raw httpx.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from ledger_client import (
    Conflict,
    Forbidden,
    InsufficientCredits,
    LedgerClient,
    NotFound,
    Spent,
    ValidationError,
)

from api.access.tokens import Scope
from api.services import Services
from ledger.domain.ids import account_stream_id
from tests.conftest import unique
from tests.e2e.conftest import Connect
from tests.support.events import stream_events
from tests.support.ledger import save


async def open_account(writer: LedgerClient, allowance: int) -> str:
    account_id = unique("acct")
    opened = await writer.open_account(account_id, monthly_allowance=allowance)
    assert (opened.account_id, opened.balance) == (account_id, allowance)
    return account_id


async def spent_events(services: Services, account_id: str) -> list[dict[str, object]]:
    events = await stream_events(services.store, account_stream_id(account_id))
    return [data for kind, data in events if kind == "CreditsSpent"]


async def test_a_spend_answers_the_balance_after_and_records_the_buckets(
    writer: LedgerClient, services: Services
) -> None:
    account_id = await open_account(writer, 100)
    account = await services.ledger.account(account_id)
    account.purchase(session_id="cs_test_direct", credits=50)
    await save(services.ledger, account)

    spent = await writer.spend(account_id, 120, reason="api call")

    assert (spent.from_allowance, spent.from_topup) == (100, 20)
    assert (spent.allowance_remaining, spent.topup_balance, spent.balance) == (0, 30, 30)
    assert (spent.amount, spent.reason, spent.account_id) == (120, "api call", account_id)
    [recorded] = await spent_events(services, account_id)
    assert (recorded["from_allowance"], recorded["from_topup"]) == (100, 20)


async def test_a_short_balance_is_402_and_records_nothing(
    writer: LedgerClient, services: Services
) -> None:
    account_id = await open_account(writer, 100)

    with pytest.raises(InsufficientCredits) as refused:
        await writer.spend(account_id, 101)

    assert refused.value.status == 402
    assert refused.value.body == {"message": "Insufficient credits."}
    assert await spent_events(services, account_id) == []


async def test_a_repeated_key_returns_the_first_answer_and_records_nothing_new(
    writer: LedgerClient, services: Services
) -> None:
    account_id = await open_account(writer, 100)

    first = await writer.spend(account_id, 10, idempotency_key="job-1")
    second = await writer.spend(account_id, 10, idempotency_key="job-1")
    with pytest.raises(ValidationError) as different:
        await writer.spend(account_id, 11, idempotency_key="job-1")

    assert first == second
    assert "Idempotency-Key" in different.value.errors
    assert len(await spent_events(services, account_id)) == 1


async def test_an_empty_key_is_refused_not_replaced_by_one_made_for_the_call(
    writer: LedgerClient, services: Services
) -> None:
    """A caller whose key came out empty would otherwise get a new key on each of its own
    retries, and each would be recorded."""
    account_id = await open_account(writer, 100)

    for _ in range(2):
        with pytest.raises(ValidationError) as refused:
            await writer.spend(account_id, 10, idempotency_key="")

    assert "Idempotency-Key" in refused.value.errors
    assert await spent_events(services, account_id) == []


async def test_a_spend_needs_an_idempotency_key_and_a_whole_amount(
    http: httpx.AsyncClient, writer: LedgerClient, writer_headers: dict[str, str]
) -> None:
    account_id = await open_account(writer, 100)
    path = f"/v1/accounts/{account_id}/spend"

    # What the client never sends: no key, a fraction. A zero it sends as asked.
    no_key = await http.post(path, json={"amount": 1}, headers=writer_headers)
    fraction = await http.post(
        path, json={"amount": 1.5}, headers={**writer_headers, "Idempotency-Key": "k-1"}
    )
    with pytest.raises(ValidationError) as zero:
        await writer.spend(account_id, 0)

    assert no_key.status_code == 422
    assert no_key.json()["errors"] == {
        "Idempotency-Key": ["The Idempotency-Key header is required."]
    }
    assert fraction.json()["errors"] == {"amount": ["The amount field must be an integer."]}
    assert zero.value.errors == {"amount": ["The amount must be at least 1."]}


async def test_customer_and_auditor_tokens_cannot_spend(
    writer: LedgerClient, connect: Connect, services: Services
) -> None:
    account_id = await open_account(writer, 100)
    customer = await services.tokens.issue(Scope.CREDITS, account_id=account_id)
    auditor = await services.tokens.issue(Scope.LEDGER_AUDIT, name="auditor")

    for token in (customer.secret, auditor.secret):
        with pytest.raises(Forbidden) as refused:
            await connect(token).spend(account_id, 1)
        assert refused.value.status == 403


async def test_spending_on_an_unknown_account_is_404(writer: LedgerClient) -> None:
    with pytest.raises(NotFound) as unknown:
        await writer.spend("acct_nobody_here", 1)

    assert unknown.value.body == {"message": "Account not found."}


async def test_concurrent_spends_past_the_balance_succeed_exactly_as_far_as_it_goes(
    writer: LedgerClient, services: Services
) -> None:
    account_id = await open_account(writer, 1000)

    answers = await asyncio.gather(
        *(writer.spend(account_id, 15) for _ in range(100)), return_exceptions=True
    )

    # Each is a spend or a 402: nothing else (no 503: the client does not retry here).
    spent = [a for a in answers if isinstance(a, Spent)]
    refused = [a for a in answers if isinstance(a, InsufficientCredits)]
    assert len(spent) + len(refused) == 100, [a for a in answers if isinstance(a, Exception)]
    assert len(spent) == 1000 // 15
    account = await services.ledger.account(account_id)
    assert account.balance == 1000 - 15 * (1000 // 15)
    assert len(await spent_events(services, account_id)) == len(spent)


async def test_monthly_reset_restores_the_allowance_and_spares_topups(
    writer: LedgerClient, services: Services
) -> None:
    account_id = await open_account(writer, 1000)
    account = await services.ledger.account(account_id)
    account.purchase(session_id="cs_test_direct_2", credits=1000)
    await save(services.ledger, account)
    await writer.spend(account_id, 1500)

    reset = await writer.monthly_reset(account_id, "2999-01")
    again = await writer.monthly_reset(account_id, "2999-01")
    with pytest.raises(Conflict):
        await writer.monthly_reset(account_id, "2998-12")
    with pytest.raises(ValidationError) as bad:
        await writer.monthly_reset(account_id, "2999-13")

    assert reset.allowance_remaining == 1000
    assert reset.topup_balance == 500
    assert again == reset
    assert list(bad.value.errors) == ["period"]
    events = await stream_events(services.store, account_stream_id(account_id))
    assert [kind for kind, _ in events].count("MonthlyAllowanceReset") == 1


async def test_a_plan_change_takes_effect_at_the_next_reset(writer: LedgerClient) -> None:
    account_id = await open_account(writer, 1000)

    changed = await writer.change_plan(account_id, 3000)
    reset = await writer.monthly_reset(account_id, "2999-02")

    assert changed.monthly_allowance == 1000
    assert changed.next_monthly_allowance == 3000
    assert reset.allowance_remaining == 3000
