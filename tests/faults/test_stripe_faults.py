"""Stripe failing (500s, hanging, dropping the connection): 502, nothing recorded, retry works."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from api.access.tokens import Scope, TokenService
from stripe_standin import RunningStandin, run_standin
from tests.conftest import IsolatedDatabase, migrated_database
from tests.faults.conftest import (
    LedgerProcess,
    open_accounts,
    writer_token,
)
from tests.support.events import events_since, tail_position

ATTEMPTS = 3  # the gateway's one try and its two network retries (max_network_retries=2)
TIMEOUT_SECONDS = 1  # STRIPE_TIMEOUT_SECONDS for the process under test: a hang costs 3 of them

FAULTS: list[dict[str, Any]] = [
    {"mode": "error", "status": 500, "count": ATTEMPTS},
    {"mode": "error", "status": 503, "count": ATTEMPTS},
    # Far longer than the test's own client waits: only the gateway's timeout gets a 502 back.
    {"mode": "hang", "count": ATTEMPTS, "seconds": 300},
    {"mode": "drop", "count": ATTEMPTS},
]


@pytest.fixture(scope="module")
async def stripe() -> AsyncIterator[RunningStandin]:
    """A stand-in of this module's own: its failures are switched on and off here."""
    async with run_standin() as running:
        yield running


async def checkout_requests(database: IsolatedDatabase, after: int, account_id: str) -> list[str]:
    return [
        data["session_id"]
        for kind, data in await events_since(database.store, after)
        if kind == "CheckoutRequested" and data["account_id"] == account_id
    ]


@pytest.mark.slow
async def test_purchases_get_502_and_record_nothing_while_stripe_fails_then_retry_works(
    postgres_server_url: str, stripe: RunningStandin, process_folder
) -> None:
    async with migrated_database(postgres_server_url) as database:
        api = LedgerProcess(
            database.url,
            process_folder,
            stripe_api_base=stripe.base_url,
            args=("serve", "--no-projector"),
            env={"STRIPE_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS)},
        )
        try:
            await api.start()
            (account_id,) = await open_accounts(
                api.base_url, await writer_token(database.pool), 1, 1000
            )
            issued = await TokenService(database.pool).issue(Scope.CREDITS, account_id=account_id)
            customer = {"Authorization": f"Bearer {issued.secret}"}
            async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
                for number, fault in enumerate(FAULTS):
                    key = {**customer, "Idempotency-Key": f"order-{number}"}
                    start = await tail_position(database.store)
                    sessions_before = len(stripe.state.sessions)
                    armed = await client.post(f"{stripe.base_url}/_standin/fail-next", json=fault)
                    assert armed.status_code == 200, armed.text
                    try:
                        failed = await client.post(
                            "/v1/credits/purchase", json={"credits": 500}, headers=key
                        )
                        assert stripe.state.fail_count == 0, (
                            "the gateway tried fewer times than expected"
                        )
                    finally:
                        await client.post(
                            f"{stripe.base_url}/_standin/fail-next", json={"count": 0}
                        )

                    assert failed.status_code == 502, (fault, failed.text)
                    assert "payment provider" in failed.json()["message"]
                    assert await checkout_requests(database, start, account_id) == []
                    # A dropped answer is lost after Stripe made the session; the others make none.
                    made = len(stripe.state.sessions) - sessions_before
                    assert made == (1 if fault["mode"] == "drop" else 0), fault

                    retried = await client.post(
                        "/v1/credits/purchase", json={"credits": 500}, headers=key
                    )
                    again = await client.post(
                        "/v1/credits/purchase", json={"credits": 500}, headers=key
                    )
                    assert retried.status_code == 200, (fault, retried.text)
                    assert again.json() == retried.json()
                    recorded = await checkout_requests(database, start, account_id)
                    assert recorded == [retried.json()["session_id"]]
                    # Stripe's own idempotency (the gateway derives its key from ours) hands
                    # the retry the session the dropped attempt made.
                    assert len(stripe.state.sessions) - sessions_before == 1

                # One dropped answer alone is absorbed by the SDK's retry: 200, one session.
                start = await tail_position(database.store)
                await client.post(
                    f"{stripe.base_url}/_standin/fail-next", json={"mode": "drop", "count": 1}
                )
                absorbed = await client.post(
                    "/v1/credits/purchase",
                    json={"credits": 700},
                    headers={**customer, "Idempotency-Key": "order-x"},
                )
                assert absorbed.status_code == 200, absorbed.text
                assert await checkout_requests(database, start, account_id) == [
                    absorbed.json()["session_id"]
                ]
            print(
                f"\nStripe faults: {len(FAULTS)} kinds x {ATTEMPTS} attempts injected, "
                f"{len(FAULTS) + 1} purchases recorded once each; nothing recorded on a 502"
            )
        finally:
            api.kill_group()
