"""Wire shapes of answers (kept apart from the domain's events)."""

from __future__ import annotations

import msgspec

from ledger.domain.account import CreditAccount


class AccountCredits(msgspec.Struct, frozen=True):
    """An account's balance: ``balance = allowance_remaining + topup_balance``."""

    account_id: str
    balance: int
    monthly_allowance: int
    allowance_remaining: int
    topup_balance: int
    period: str

    @classmethod
    def of(cls, account: CreditAccount) -> AccountCredits:
        return cls(
            account_id=account.account_id,
            balance=account.balance,
            monthly_allowance=account.monthly_allowance,
            allowance_remaining=account.allowance_remaining,
            topup_balance=account.topup_balance,
            period=account.period,
        )


class AccountPlan(msgspec.Struct, frozen=True):
    """An account's plan: this period's allowance and the one from the next reset on."""

    account_id: str
    monthly_allowance: int
    next_monthly_allowance: int
    period: str

    @classmethod
    def of(cls, account: CreditAccount) -> AccountPlan:
        return cls(
            account_id=account.account_id,
            monthly_allowance=account.monthly_allowance,
            next_monthly_allowance=account.next_monthly_allowance,
            period=account.period,
        )
