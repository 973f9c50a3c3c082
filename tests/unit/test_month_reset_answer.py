"""A monthly reset's answer: the balances a balance read gives, in its order, and ``started``."""

from __future__ import annotations

import msgspec

from ledger.domain.account import CreditAccount
from ledger.handlers.accounts import AccountBalances, MonthReset


def test_a_month_reset_is_made_only_by_after_with_the_balance_reads_figures_then_started() -> None:
    """It inherited ``AccountBalances.of()``, which cannot know ``started``: a call raised a
    TypeError, where its type said it returned a MonthReset."""
    account = CreditAccount.open("acct_1", 1000, "2026-11")
    account.spend(300, "work")
    account.reset_month("2026-12")

    answer = MonthReset.after(account, started=True)

    assert not hasattr(MonthReset, "of")
    read = msgspec.json.decode(msgspec.json.encode(AccountBalances.of(account)))
    said = msgspec.json.decode(msgspec.json.encode(answer))
    assert list(said) == [*read, "started"]  # the stored answers' shape, unchanged
    assert said == {**read, "started": True}
    assert said["allowance_remaining"] == 1000
