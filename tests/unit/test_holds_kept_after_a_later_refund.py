"""What a reset kept of the allowance for an open hold's top-ups that top-ups no longer backed
(``held_topup_kept``) stands for those top-ups (``KeptPart``): a capture after a refund made
after the reset takes the top-ups the reset found backed first, a debt the refund made, and
not the kept credit, which lapses. Spent on whatever the capture took first, it repaid that
refund's debt, and the order reset, refund, capture left the customer a credit richer than
the plain rules (docs/holds.md, "What a reset keeps for held top-ups stands for them")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from ledger.domain.account import CreditAccount

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(days=365)


def kept_one_for_hold_b() -> CreditAccount:
    """Hold B reserves 50 top-ups, 49 of them backed: the reset keeps 1 credit for the 50th."""
    account = CreditAccount.open("acct_kept", 100, "2026-11")
    account.place_hold("a", 100, "", EXPIRES, NOW)  # the allowance
    account.purchase("cs_1", 50)
    account.place_hold("b", 50, "", EXPIRES, NOW)  # the top-ups
    account.release_hold("a")
    account.purchase("cs_2", 1)
    account.reverse_for_dispute("cs_2", "dp_1", 1)
    account.claw_back("cs_2", 1)
    assert account.topup_balance == 49
    account.reset_month("2026-12")
    assert account.kept_for_holds == 1
    return account


def capture(account: CreditAccount) -> None:
    account.capture_hold("b", 1, NOW)


def reset(account: CreditAccount) -> None:
    account.reset_month("2027-01")


def refund(account: CreditAccount) -> None:
    account.claw_back("cs_1", 50)


@pytest.mark.parametrize(
    "order",
    [
        (capture, reset, refund),
        (reset, capture, refund),
        (reset, refund, capture),
    ],
    ids=["capture-reset-refund", "reset-capture-refund", "reset-refund-capture"],
)
def test_a_capture_after_a_later_refund_ends_as_the_plain_rules(
    order: tuple[Callable[[CreditAccount], None], ...],
) -> None:
    """Capturing 1 of B in any order ends as the plain rules spending 1 top-up when B was
    placed: top-ups 50 - 1 - 1 - 50 = -2, the allowance 100, a balance of 98."""
    account = kept_one_for_hold_b()
    for step in order:
        step(account)
    assert (account.topup_balance, account.allowance_remaining, account.balance) == (-2, 100, 98)
