"""What a paid delivery's decision asks of a session and an account, written without the
calls CPython 3.11 makes dear (nested properties, ``min``/``max``): the same answers as the
rules written plainly, over every case."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from ledger.domain import checkout
from ledger.domain.account import CreditAccount
from ledger.domain.checkout import CheckoutSession
from ledger.domain.events import CreditsPurchased
from ledger.domain.holds import HeldTotals
from ledger.store.repository import copy_of

STATUSES = [
    checkout.PENDING,
    checkout.PAID,
    checkout.EXPIRED,
    checkout.FAILED,
    checkout.REFUNDED,
    checkout.MISMATCHED,
]


@pytest.mark.parametrize("status", STATUSES)
def test_a_session_is_settled_when_paid_or_its_mismatch_recorded(status: str) -> None:
    session = CheckoutSession.request(
        session_id="cs_settled",
        account_id="acct_settled",
        credits=100,
        amount=100,
        currency="usd",
        checkout_url="https://checkout.example/cs_settled",
        expires_at=2_000_000_000,
    )
    session.status = status

    assert session.settled == (session.paid or status == checkout.MISMATCHED)


def _credited_as_written(state: dict[str, Any], credits: int) -> tuple[int, int]:
    """The rule of ``CreditAccount._credited`` with ``min`` and ``max``, as it was written."""
    above_zero = max(state["topup_balance"] + credits, 0) - max(state["topup_balance"], 0)
    unbacked = state["held_topup"] - state["kept_for_holds"] - state["topup_reserved"]
    return (
        state["topup_balance"] + credits,
        state["topup_reserved"] + min(above_zero, max(unbacked, 0)),
    )


def test_a_purchase_moves_the_top_ups_as_the_rule_says_in_every_case() -> None:
    opened = CreditAccount.open("acct_credited", 100, "2026-12")
    opened.collect_events()
    values = (-30, -1, 0, 1, 7, 40)
    for balance, held, kept, reserved, credits in itertools.product(
        values, (0, 5, 40), (0, 3, 50), (0, 2, 30), (-5, 0, 1, 10, 60)
    ):
        account = copy_of(opened)
        account.topup_balance = balance
        account.held_totals = HeldTotals(from_topup=held)
        account.kept_for_holds = kept
        account.topup_reserved = reserved
        expected = _credited_as_written(
            {
                "topup_balance": balance,
                "held_topup": held,
                "kept_for_holds": kept,
                "topup_reserved": reserved,
            },
            credits,
        )

        account._credited(_purchased(account, credits))

        assert (account.topup_balance, account.topup_reserved) == expected, (
            balance,
            held,
            kept,
            reserved,
            credits,
        )


def _purchased(account: CreditAccount, credits: int) -> CreditsPurchased:
    return CreditsPurchased(
        originator_id=account.id,
        originator_version=account.version + 1,
        timestamp=account.modified_on,
        session_id="cs_credited",
        credits=credits,
    )
