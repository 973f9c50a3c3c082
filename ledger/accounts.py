"""Opening accounts and reading their balance from the write side."""

from __future__ import annotations

from ledger.domain.account import CreditAccount
from ledger.domain.errors import AccountAlreadyExists, AccountNotFound
from ledger.domain.ids import account_stream_id
from ledger.ports import Clock, system_clock
from ledger.repository import Repository
from ledger.store.event_store import ConcurrencyConflict


def billing_period(clock: Clock) -> str:
    """The calendar month ``YYYY-MM`` an account opened now starts in."""
    return clock().strftime("%Y-%m")


class AccountService:
    """Commands and write-side reads on credit accounts."""

    def __init__(self, repository: Repository, clock: Clock = system_clock) -> None:
        self.repository = repository
        self.clock = clock

    async def open(self, account_id: str, monthly_allowance: int) -> CreditAccount:
        """Open an account with its full allowance available for the current period."""
        account = CreditAccount(
            account_id=account_id,
            monthly_allowance=monthly_allowance,
            period=billing_period(self.clock),
        )
        try:
            await self.repository.save(account)
        except ConcurrencyConflict as conflict:
            raise AccountAlreadyExists(account_id) from conflict
        return account

    async def get(self, account_id: str) -> CreditAccount:
        """The account as its events leave it."""
        account = await self.repository.get(CreditAccount, account_stream_id(account_id))
        if account is None:
            raise AccountNotFound(account_id)
        return account

    async def exists(self, account_id: str) -> bool:
        """Whether the account has been opened."""
        return await self.repository.exists(account_stream_id(account_id))
