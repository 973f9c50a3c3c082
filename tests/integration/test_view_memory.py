"""The live projector remembers the rows it wrote instead of reading them back
(projections/memory.py), and forgets them whenever it cannot vouch for them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from ledger.adapters.stripe_webhooks import parse_event
from ledger.commands import ResetMonth, SetLowBalanceThreshold, SpendCredits
from ledger.service import Ledger
from ledger.store.event_store import Connection
from projections.balances import BalancesProjection
from projections.events import ProjectedEvent
from projections.memory import ViewMemory
from projections.runner import all_projections, apply_batch
from projections.writes import Write
from tests.conftest import IsolatedDatabase
from tests.support.events import caught_up, settled
from tests.support.ledger import open_account
from tests.support.stripe_events import charge, checkout_session, event_body

# What each remembering view wrote, in an order that does not depend on the batches.
VIEWS = {
    "balances": "SELECT * FROM balances ORDER BY account_id",
    "statement": "SELECT * FROM statement_lines ORDER BY position",
    "notifications": "SELECT * FROM notifier_accounts ORDER BY account_id",
    "purchases": "SELECT * FROM purchases ORDER BY session_id",
}


async def spend(ledger: Ledger, account_id: str, amount: int, key: str) -> None:
    await ledger.execute(
        SpendCredits(account_id=account_id, amount=amount, reason="test", idempotency_key=key)
    )


async def deliver(ledger: Ledger, event_type: str, obj: dict[str, Any]) -> None:
    """A Stripe event, as the webhook route hands it to the ledger once verified."""
    envelope, meaning = parse_event(event_body(event_type, obj).encode())
    await ledger.apply_payment_event(envelope.id, envelope.type, meaning)


async def views(isolated_db: IsolatedDatabase) -> dict[str, list[dict[str, Any]]]:
    return {
        name: [dict(row) for row in await isolated_db.pool.fetch(query)]
        for name, query in VIEWS.items()
    }


async def allowance_remaining(isolated_db: IsolatedDatabase, account_id: str) -> int:
    remaining: int = await isolated_db.pool.fetchval(
        "SELECT allowance_remaining FROM balances WHERE account_id = $1", account_id
    )
    return remaining


async def last_balance_line(isolated_db: IsolatedDatabase, account_id: str) -> int:
    balance: int = await isolated_db.pool.fetchval(
        """SELECT balance_after FROM statement_lines WHERE account_id = $1
           ORDER BY position DESC LIMIT 1""",
        account_id,
    )
    return balance


async def test_remembering_views_write_what_views_that_read_their_rows_back_write(
    isolated_db: IsolatedDatabase,
) -> None:
    ledger = isolated_db.ledger()
    remembering = all_projections(remembering=True)
    for n in range(3):
        await open_account(ledger, f"acct_mem_{n}", 1000)
    for round_number in range(4):
        for n in range(3):
            await spend(ledger, f"acct_mem_{n}", 7 + n, f"k{round_number}_{n}")
        await ledger.execute(SetLowBalanceThreshold(account_id="acct_mem_0", threshold=990))
        # A session paid (never recorded here: the ledger recovers it from its metadata),
        # then, a round later, part of the one before refunded: its row comes back.
        session = f"cs_mem_{round_number}"
        await deliver(
            ledger,
            "checkout.session.completed",
            checkout_session(
                session, account_id="acct_mem_2", credits=100, payment_intent=f"pi_{session}"
            ),
        )
        if round_number:
            paid = f"pi_cs_mem_{round_number - 1}"
            await deliver(ledger, "charge.refunded", charge(paid, amount=100, amount_refunded=40))
        await caught_up(isolated_db.store, projections=remembering, batch_size=2)
    await ledger.execute(ResetMonth(account_id="acct_mem_1", period="2099-01"))
    await spend(ledger, "acct_mem_1", 3, "after_reset")
    await caught_up(isolated_db.store, projections=remembering, batch_size=2)
    remembered = await views(isolated_db)

    await isolated_db.pool.execute(
        "TRUNCATE balances, statement_lines, notifier_accounts, purchases;"
        " DELETE FROM projection_positions"  # the views' rows: TRUNCATE is no one's there
    )
    await caught_up(isolated_db.store, batch_size=2)

    assert remembered == await views(isolated_db)
    assert [(row["status"], row["amount_refunded"]) for row in remembered["purchases"]] == [
        ("paid", 40),
        ("paid", 40),
        ("paid", 40),
        ("paid", 0),
    ]
    # Opened, four rounds of three spends, four purchases and three refunds' claw-backs,
    # the reset and a spend after it.
    assert len(remembered["statement"]) == 3 + 3 * 4 + 4 + 3 + 2


async def test_a_view_another_projector_wrote_meanwhile_is_read_afresh(
    isolated_db: IsolatedDatabase,
) -> None:
    ledger = isolated_db.ledger()
    remembering = all_projections(remembering=True)
    await open_account(ledger, "acct_mem", 100)
    await caught_up(isolated_db.store, projections=remembering)

    await spend(ledger, "acct_mem", 10, "by_the_other")
    await caught_up(isolated_db.store)  # another projector
    await spend(ledger, "acct_mem", 5, "by_this_one")
    await caught_up(isolated_db.store, projections=remembering)

    # Folded onto the rows it remembered (100), the views would say 95.
    assert await allowance_remaining(isolated_db, "acct_mem") == 85
    assert await last_balance_line(isolated_db, "acct_mem") == 85


class FailsWhenArmed:
    """A view whose batch fails, after the views before it in the batch have folded theirs."""

    name = "fails_when_armed"
    table = "balances"  # never written

    def __init__(self) -> None:
        self.armed = False

    async def fold(
        self, connection: Connection, table: str, events: Sequence[ProjectedEvent]
    ) -> list[Write]:
        if self.armed:
            raise RuntimeError("this batch fails")
        return []

    async def apply(
        self, connection: Connection, table: str, events: Sequence[ProjectedEvent]
    ) -> None:
        await self.fold(connection, table, events)


async def test_a_failed_batch_leaves_nothing_remembered_that_did_not_commit(
    isolated_db: IsolatedDatabase,
) -> None:
    ledger = isolated_db.ledger()
    failing = FailsWhenArmed()
    projections = [BalancesProjection(ViewMemory()), failing]
    await open_account(ledger, "acct_mem", 100)
    await caught_up(isolated_db.store, projections=projections)

    await spend(ledger, "acct_mem", 10, "spent_once")
    await settled(isolated_db.store)
    failing.armed = True
    with pytest.raises(RuntimeError):
        await apply_batch(isolated_db.store, projections)
    failing.armed = False
    await caught_up(isolated_db.store, projections=projections)

    # The failed batch had folded the spend into the remembered row: applied again onto
    # that row, it would count twice (80).
    assert await allowance_remaining(isolated_db, "acct_mem") == 90
