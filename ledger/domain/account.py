"""The credit account: a monthly allowance plus purchased top-ups."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.domain.errors import InvalidAccountId, InvalidAmount
from ledger.domain.ids import account_stream_id

ACCOUNT_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}"


def check_account_id(account_id: str) -> None:
    """Refuse ids that would be awkward in URLs, logs and spreadsheets."""
    if not re.fullmatch(ACCOUNT_ID_PATTERN, account_id):
        raise InvalidAccountId(
            "An account id is 1 to 100 letters, digits and _ . : - (for example acct_123)."
        )


class CreditAccount(Aggregate):
    """What one customer may spend: allowance first, then top-ups."""

    @staticmethod
    def create_id(account_id: str, **_: Any) -> UUID:
        return account_stream_id(account_id)

    @event("AccountOpened")
    def __init__(self, account_id: str, monthly_allowance: int, period: str) -> None:
        check_account_id(account_id)
        if monthly_allowance < 0:
            raise InvalidAmount("The monthly allowance must not be negative.")
        self.account_id = account_id
        self.monthly_allowance = monthly_allowance
        self.allowance_remaining = monthly_allowance
        self.topup_balance = 0
        self.period = period

    @property
    def balance(self) -> int:
        """Credits spendable now."""
        return self.allowance_remaining + self.topup_balance
