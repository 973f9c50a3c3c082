"""The credit account: a monthly allowance plus purchased top-ups."""

from __future__ import annotations

import re
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.domain.errors import (
    InsufficientCredits,
    InvalidAccountId,
    InvalidAmount,
    InvalidPeriod,
    PeriodOutOfOrder,
)
from ledger.domain.ids import account_stream_id

ACCOUNT_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}"
PERIOD_PATTERN = r"\d{4}-(0[1-9]|1[0-2])"


def check_account_id(account_id: str) -> None:
    """Refuse ids that would be awkward in URLs, logs and spreadsheets."""
    if not re.fullmatch(ACCOUNT_ID_PATTERN, account_id):
        raise InvalidAccountId(
            "An account id is 1 to 100 letters, digits and _ . : - (for example acct_123)."
        )


def check_period(period: str) -> None:
    """A billing period is a month, written ``YYYY-MM``."""
    if not re.fullmatch(PERIOD_PATTERN, period):
        raise InvalidPeriod("A period is a month written YYYY-MM, for example 2026-12.")


class CreditAccount(Aggregate):
    """What one customer may spend: allowance first, then top-ups."""

    @staticmethod
    def create_id(account_id: str, **_: Any) -> UUID:
        return account_stream_id(account_id)

    @event("AccountOpened")
    def __init__(self, account_id: str, monthly_allowance: int, period: str) -> None:
        check_account_id(account_id)
        check_period(period)
        if monthly_allowance < 0:
            raise InvalidAmount("The monthly allowance must not be negative.")
        self.account_id = account_id
        self.monthly_allowance = monthly_allowance
        self.allowance_remaining = monthly_allowance
        self.topup_balance = 0
        self.period = period
        self.next_monthly_allowance = monthly_allowance

    @property
    def balance(self) -> int:
        """Credits spendable now."""
        return self.allowance_remaining + self.topup_balance

    def purchase(self, session_id: str, credits: int) -> None:
        """Add a paid top-up; it survives every monthly reset until spent."""
        if credits <= 0:
            raise InvalidAmount("A purchase adds a positive number of credits.")
        self._record_purchase(session_id=session_id, credits=credits)

    @event("CreditsPurchased")
    def _record_purchase(self, session_id: str, credits: int) -> None:
        # A negative top-up balance (credits clawed back after they were spent)
        # is repaid first by the next purchase, simply by adding.
        self.topup_balance += credits

    def claw_back(self, session_id: str, credits: int) -> None:
        """Take back a refunded purchase's credits, even past zero (see README: clawbacks)."""
        if credits > 0:
            self._record_clawback(session_id=session_id, credits=credits)

    @event("CreditsClawedBack")
    def _record_clawback(self, session_id: str, credits: int) -> None:
        self.topup_balance -= credits

    def reverse_for_dispute(self, session_id: str, dispute_id: str, credits: int) -> None:
        """Hold back a disputed purchase's remaining credits while the dispute is open."""
        if credits > 0:
            self._record_reversal(session_id=session_id, dispute_id=dispute_id, credits=credits)

    @event("CreditsReversed")
    def _record_reversal(self, session_id: str, dispute_id: str, credits: int) -> None:
        self.topup_balance -= credits

    def restore_after_dispute(self, session_id: str, dispute_id: str, credits: int) -> None:
        """Give back the credits of a dispute the merchant won."""
        if credits > 0:
            self._record_restoration(session_id=session_id, dispute_id=dispute_id, credits=credits)

    @event("CreditsRestored")
    def _record_restoration(self, session_id: str, dispute_id: str, credits: int) -> None:
        self.topup_balance += credits

    def spend(self, amount: int, reason: str) -> tuple[int, int]:
        """Burn the allowance first, then top-ups; never overdraw.

        Returns (from allowance, from top-ups). Raises InsufficientCredits and
        records nothing when the balance is short.
        """
        if amount <= 0:
            raise InvalidAmount("The amount must be at least 1.")
        if amount > self.balance:
            raise InsufficientCredits(f"{amount} credits asked, {self.balance} available.")
        from_allowance = min(amount, max(self.allowance_remaining, 0))
        from_topup = amount - from_allowance
        self._record_spend(
            amount=amount, from_allowance=from_allowance, from_topup=from_topup, reason=reason
        )
        return from_allowance, from_topup

    @event("CreditsSpent")
    def _record_spend(self, amount: int, from_allowance: int, from_topup: int, reason: str) -> None:
        self.allowance_remaining -= from_allowance
        self.topup_balance -= from_topup

    def reset_month(self, period: str) -> bool:
        """Give back the plan's whole allowance for a new period; top-ups are untouched.

        The same period again changes nothing (False); an earlier one is refused.
        """
        check_period(period)
        if period < self.period:
            raise PeriodOutOfOrder(
                f"The account was last reset for {self.period}; {period} is earlier."
            )
        if period == self.period:
            return False
        self._record_reset(period=period, monthly_allowance=self.next_monthly_allowance)
        return True

    @event("MonthlyAllowanceReset")
    def _record_reset(self, period: str, monthly_allowance: int) -> None:
        # Unspent allowance does not roll over: the allowance is set, not added to.
        self.period = period
        self.monthly_allowance = monthly_allowance
        self.allowance_remaining = monthly_allowance

    def change_allowance(self, monthly_allowance: int) -> bool:
        """Change the plan's allowance from the next reset on; False if it is unchanged."""
        if monthly_allowance < 0:
            raise InvalidAmount("The monthly allowance must not be negative.")
        if monthly_allowance == self.next_monthly_allowance:
            return False
        self._record_allowance_change(monthly_allowance=monthly_allowance)
        return True

    @event("MonthlyAllowanceChanged")
    def _record_allowance_change(self, monthly_allowance: int) -> None:
        self.next_monthly_allowance = monthly_allowance
