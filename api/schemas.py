"""Wire shapes of answers (kept apart from the domain's events)."""

from __future__ import annotations

from typing import Protocol

import msgspec

from ledger.domain.account import CreditAccount
from projections.queries import StatementLine


class HasBalance(Protocol):
    """Anything that knows an account's buckets: the aggregate or its projected row."""

    @property
    def account_id(self) -> str: ...
    @property
    def balance(self) -> int: ...
    @property
    def monthly_allowance(self) -> int: ...
    @property
    def allowance_remaining(self) -> int: ...
    @property
    def topup_balance(self) -> int: ...
    @property
    def period(self) -> str: ...
    @property
    def held(self) -> int: ...
    @property
    def available(self) -> int: ...


class AccountCredits(msgspec.Struct, frozen=True):
    """An account's balance: ``balance = allowance_remaining + topup_balance``.

    ``held`` is what open holds reserve of it; ``available = balance - held`` is
    what can be spent or held now.
    """

    account_id: str
    balance: int
    monthly_allowance: int
    allowance_remaining: int
    topup_balance: int
    period: str
    held: int
    available: int

    @classmethod
    def of(cls, account: HasBalance) -> AccountCredits:
        return cls(
            account_id=account.account_id,
            balance=account.balance,
            monthly_allowance=account.monthly_allowance,
            allowance_remaining=account.allowance_remaining,
            topup_balance=account.topup_balance,
            period=account.period,
            held=account.held,
            available=account.available,
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


class Transactions(msgspec.Struct, frozen=True):
    """A page of ledger lines, newest first; pass ``next_after`` as ``after`` for more."""

    data: list[StatementLine]
    next_after: int | None
