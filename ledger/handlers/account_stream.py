"""What every command on an account starts with: its stream, its turn, its existence."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from ledger.domain.account import CreditAccount
from ledger.domain.errors import AccountNotFound
from ledger.domain.ids import account_stream_id
from ledger.unit_of_work import Streams


class AccountCommand(Protocol):
    @property
    def account_id(self) -> str: ...


def load_account(streams: Streams, command: AccountCommand) -> Awaitable[CreditAccount | None]:
    """The account the command names (None if it was never opened): awaited as the
    repository's own (not a coroutine of its own: one fewer a command)."""
    return streams.get(CreditAccount, account_stream_id(command.account_id))


def by_account(command: AccountCommand) -> str:
    """Commands on one account take turns in a process."""
    return command.account_id


def existing(account: CreditAccount | None, account_id: str) -> CreditAccount:
    """The account, or AccountNotFound."""
    if account is None:
        raise AccountNotFound(account_id)
    return account
