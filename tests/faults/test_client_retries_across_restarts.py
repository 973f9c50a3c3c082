"""The Python client through an API SIGKILLed under load and started again: a spend that
failed is sent again with the key the client made for it, and each is recorded once."""

from __future__ import annotations

import asyncio
import signal

from ledger_client import ConnectionFailed, LedgerClient, ServerError, Spent

from api.access.tokens import Scope, TokenService
from stripe_standin import RunningStandin
from tests.faults.conftest import open_accounts, serving
from tests.support.events import events_since


async def test_spends_cut_off_by_a_sigkill_are_recorded_once_when_sent_again_with_their_keys(
    postgres_server_url: str, faults_standin: RunningStandin, process_folder
) -> None:
    async with serving(postgres_server_url, process_folder, faults_standin) as (database, api):
        token = (await TokenService(database.pool).issue(Scope.LEDGER_WRITE, name="c")).secret
        headers = {"Authorization": f"Bearer {token}"}
        [account_id] = await open_accounts(api.base_url, headers, 1, allowance=1_000_000)
        answered: list[Spent] = []
        failed: list[ConnectionFailed | ServerError] = []
        under_load = asyncio.Event()
        killed = asyncio.Event()

        async def spend_until_cut_off(ledger: LedgerClient) -> None:
            # No key of the caller's: the client makes one per call.
            while True:
                try:
                    answered.append(await ledger.spend(account_id, 1, reason="load"))
                    if len(answered) >= 50:
                        under_load.set()
                except (ConnectionFailed, ServerError) as error:
                    failed.append(error)
                    return
                if killed.is_set():
                    return

        async with LedgerClient(api.base_url, token, retries=0) as ledger:
            load = [asyncio.create_task(spend_until_cut_off(ledger)) for _ in range(16)]
            await asyncio.wait_for(under_load.wait(), 30)
            api.send(signal.SIGKILL)
            killed.set()
            assert await api.wait(30) == -signal.SIGKILL
            await asyncio.gather(*load)
            await api.start()

            for error in failed:
                assert error.idempotency_key is not None
                again = await ledger.spend(
                    account_id, 1, reason="load", idempotency_key=error.idempotency_key
                )
                answered.append(again)
            credits = await ledger.get_credits(account_id)

        events = await events_since(database.store, 0)
        spends = [kind for kind, _ in events if kind == "CreditsSpent"]
        assert failed, "no spend was in flight when the API was killed"
        assert len(spends) == len(answered)
        assert credits.balance == 1_000_000 - len(answered)
