"""Deciding account commands: open, spend, reset, plan and threshold changes."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, Self

import msgspec

from ledger.commands import (
    ChangeAllowance,
    OpenAccount,
    ResetMonth,
    SetLowBalanceThreshold,
    SpendCredits,
)
from ledger.domain.account import CreditAccount
from ledger.domain.errors import AccountAlreadyExists
from ledger.domain.events import CreditsSpent
from ledger.handlers.account_stream import by_account, existing, load_account
from ledger.handlers.expiries import expire_due
from ledger.store.claims import Claim, request_fingerprint
from ledger.store.repository import copy_of
from ledger.unit_of_work import Decision, Handler


class Spent(msgspec.Struct, frozen=True):
    """The answer to a spend: where the credits came from and the balance after."""

    account_id: str
    amount: int
    from_allowance: int
    from_topup: int
    reason: str
    balance: int
    allowance_remaining: int
    topup_balance: int
    monthly_allowance: int
    period: str
    held: int = 0
    available: int = -1
    from_grants: dict[str, int] = msgspec.field(default_factory=dict)
    granted: int = 0

    def __post_init__(self) -> None:
        if self.available == -1:  # an answer stored before spends told what is available
            msgspec.structs.force_setattr(self, "available", self.balance - self.held)


class HasBalances(Protocol):
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
    @property
    def granted(self) -> int: ...


class BalanceFigures(msgspec.Struct, frozen=True):
    """An account's balances as answers give them: which figures, in which order, written
    once for a balance read (``AccountBalances``) and a monthly reset (``MonthReset``)."""

    account_id: str
    balance: int
    monthly_allowance: int
    allowance_remaining: int
    topup_balance: int
    period: str
    held: int
    available: int
    granted: int


class AccountBalances(BalanceFigures, frozen=True):
    """An account's balances as a balance read answers them (``api.schemas.AccountCredits``),
    each read from the aggregate or its projected row."""

    @classmethod
    def of(cls, account: HasBalances) -> Self:
        return cls(
            account_id=account.account_id,
            balance=account.balance,
            monthly_allowance=account.monthly_allowance,
            allowance_remaining=account.allowance_remaining,
            topup_balance=account.topup_balance,
            period=account.period,
            held=account.held,
            available=account.available,
            granted=account.granted,
        )


class MonthReset(BalanceFigures, frozen=True):
    """The answer to a monthly reset: the balances after it (as a balance read shows them),
    and whether it started the period (False: the account was in it already).

    Not an ``AccountBalances``, whose ``of()`` cannot know ``started``: inherited, it raised a
    TypeError where its type promised a MonthReset. ``after`` is how one is made."""

    started: bool

    @classmethod
    def after(cls, account: CreditAccount, *, started: bool) -> MonthReset:
        return cls(**msgspec.structs.asdict(AccountBalances.of(account)), started=started)


def billing_period(moment: datetime) -> str:
    """The calendar month ``YYYY-MM`` of ``moment`` (UTC)."""
    return moment.strftime("%Y-%m")


def decide_open(account: CreditAccount | None, command: OpenAccount) -> Decision[CreditAccount]:
    if account is not None:
        raise AccountAlreadyExists(command.account_id)
    assert command.at is not None
    opened = CreditAccount.open(
        command.account_id, command.monthly_allowance, billing_period(command.at)
    )
    return Decision(opened, [opened])


def decide_spend(account: CreditAccount | None, command: SpendCredits) -> Decision[Spent]:
    account = existing(account, command.account_id)
    keys = expire_due(account, command.at)
    spent = account.spend(command.amount, command.reason, command.at)
    return Decision(spent_answer(account, spent), [account], keys)


def spent_answer(account: CreditAccount, spent: CreditsSpent) -> Spent:
    """The answer to the spend ``account`` has just recorded (``spent``)."""
    balance, held, available = account.balances()
    return Spent(
        account_id=account.account_id,
        amount=spent.amount,
        from_allowance=spent.from_allowance,
        from_topup=spent.from_topup,
        reason=spent.reason,
        balance=balance,
        allowance_remaining=account.allowance_remaining,
        topup_balance=account.topup_balance,
        monthly_allowance=account.monthly_allowance,
        period=account.period,
        held=held,
        available=available,
        from_grants=spent.from_grants,
        granted=account.granted,
    )


def spend_claim(command: SpendCredits) -> Claim:
    return Claim(
        f"spend/{command.account_id}",
        command.idempotency_key,
        request_fingerprint({"amount": command.amount, "reason": command.reason}),
    )


def decide_reset(account: CreditAccount | None, command: ResetMonth) -> Decision[MonthReset]:
    account = existing(account, command.account_id)
    assert command.at is not None
    period = command.period or billing_period(command.at)
    if period > account.period:
        # A hold past its expiry when the reset is decided has expired, swept or not: its
        # expiry is recorded first, so its allowance share lapses with the old period's
        # (repaying a clawback's debt) instead of being carried over as if work in progress
        # could capture it. So is a grant's, which the reset leaves alone but its answer
        # would count.
        keys = expire_due(account, command.at)
        account.reset_month(period)
        return Decision(MonthReset.after(account, started=True), [account], keys)
    account.reset_month(period)  # an earlier period is refused
    # The same period changes nothing, and answers the balances as a balance read shows
    # them: with the expiries due, on a copy, never committed.
    shown = copy_of(account)
    expire_due(shown, command.at)
    return Decision(MonthReset.after(shown, started=False), [account])


def reset_claim(command: ResetMonth) -> Claim | None:
    """A reset with an idempotency key is answered once: a repeat gets the first answer
    (without one, the same period again changes nothing and answers the balances now)."""
    if command.idempotency_key is None:
        return None
    return Claim(
        f"reset/{command.account_id}",
        command.idempotency_key,
        request_fingerprint({"period": command.period}),
    )


def decide_plan(account: CreditAccount | None, command: ChangeAllowance) -> Decision[CreditAccount]:
    account = existing(account, command.account_id)
    account.change_allowance(command.monthly_allowance)
    return Decision(account, [account])


def decide_threshold(
    account: CreditAccount | None, command: SetLowBalanceThreshold
) -> Decision[CreditAccount]:
    account = existing(account, command.account_id)
    # The alerts a new threshold sets off are judged on the balances a read shows: with the
    # expiries due recorded first (a hold past its expiry still held made a low alert).
    keys = expire_due(account, command.at)
    account.set_low_balance_threshold(command.threshold)
    return Decision(account, [account], keys)


HANDLERS: dict[type, Handler] = {  # type: ignore[type-arg]
    OpenAccount: Handler(CreditAccount, by_account, load_account, decide_open),
    SpendCredits: Handler(Spent, by_account, load_account, decide_spend, spend_claim),
    ResetMonth: Handler(MonthReset, by_account, load_account, decide_reset, reset_claim),
    ChangeAllowance: Handler(CreditAccount, by_account, load_account, decide_plan),
    SetLowBalanceThreshold: Handler(CreditAccount, by_account, load_account, decide_threshold),
}
