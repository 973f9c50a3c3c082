"""The webhook benchmark pays sessions the ledger recorded first, as a real purchase is
paid, so it measures the path healthy payments take and not the recovery of a session
the store never saw."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from bench import checkouts, spend_instructions
from bench.load import write_deliveries
from ledger.domain.ids import checkout_stream_id
from ledger.store.event_store import EventStore
from tests.conftest import unique
from tests.support.events import stream_events
from tests.support.stripe_events import WEBHOOK_SECRET


async def test_the_bench_delivers_payments_for_the_sessions_it_recorded_first(
    http: httpx.AsyncClient,
    writer_headers: dict[str, str],
    store: EventStore,
    tmp_path: Path,
) -> None:
    prefix = unique("acct_bw") + "_"
    for number in range(2):
        body = {"account_id": f"{prefix}{number:04d}", "monthly_allowance": 0}
        opened = await http.post("/v1/accounts", json=body, headers=writer_headers)
        assert opened.status_code == 201, opened.text
    nonce = secrets.token_hex(4)
    await checkouts.record_requested(store, nonce, 3, prefix, 2)
    deliveries = tmp_path / "deliveries.tsv"
    write_deliveries(deliveries, 3, prefix, 2, WEBHOOK_SECRET, nonce)

    for line in deliveries.read_text().splitlines():
        signature, body = line.split("\t", 1)
        answer = await http.post(
            "/v1/stripe/webhook",
            content=body,
            headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
        )
        assert answer.status_code == 200, answer.text

    for session_id, _ in checkouts.sessions(nonce, 3, prefix, 2):
        events = await stream_events(store, checkout_stream_id(session_id))
        assert [name for name, _ in events] == ["CheckoutRequested", "CheckoutPaid"]
        assert events[0][1]["recovered"] is False
    balances = []
    for number in range(2):
        answer = await http.get(
            f"/v1/accounts/{prefix}{number:04d}/credits", headers=writer_headers
        )
        balances.append(answer.json()["topup_balance"])
    assert balances == [2 * checkouts.CREDITS, checkouts.CREDITS]


def test_the_instruction_count_of_a_delivery_pays_each_session_once(
    postgres_server_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """``spend_instructions --webhook`` (here without valgrind) delivers paid sessions it
    recorded first, through the app's route and without HTTP, each credited once."""
    args = ["--webhook", "--no-valgrind", "--runs", "1", "--spends", "5", "--warm-up", "2",
            "--accounts", "2", "--server", postgres_server_url,
            "--prefix", "test_instr_"]  # fmt: skip
    for direct in ([], ["--direct"]):
        spend_instructions.main([*args, *direct])
        printed = capfd.readouterr().out
        assert "statuses: {200: 7}" in printed
        assert "'CheckoutPaid': 7, 'CheckoutRequested': 7, 'CreditsPurchased': 7" in printed
