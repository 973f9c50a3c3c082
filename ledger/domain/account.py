"""The credit account: a monthly allowance plus purchased top-ups."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate, event

from ledger.domain.errors import (
    CaptureExceedsHold,
    HoldHasExpired,
    HoldNotFound,
    InsufficientCredits,
    InvalidAccountId,
    InvalidAmount,
    InvalidPeriod,
    PeriodOutOfOrder,
)
from ledger.domain.holds import OpenHold, Settlement, settle
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
        self.holds: dict[str, dict[str, Any]] = {}
        self.low_balance_threshold: int | None = None

    @property
    def balance(self) -> int:
        """Credits the account holds, including those reserved by open holds."""
        return self.allowance_remaining + self.topup_balance

    @property
    def open_holds(self) -> dict[str, dict[str, Any]]:
        # Snapshots taken before holds existed restore an account without the attribute.
        return self.__dict__.setdefault("holds", {})

    @property
    def held(self) -> int:
        """Credits reserved by open holds."""
        holds = self.open_holds
        return sum(int(h["amount"]) for h in holds.values()) if holds else 0

    @property
    def available(self) -> int:
        """Credits that can be spent or held now: the balance less what holds reserve."""
        return self.balance - self.held

    @property
    def free_allowance(self) -> int:
        """This period's allowance that is neither spent nor held."""
        holds = self.open_holds
        if not holds:
            return self.allowance_remaining
        return self.allowance_remaining - sum(int(h["from_allowance"]) for h in holds.values())

    @property
    def effective_low_balance_threshold(self) -> int:
        """Below this ``available`` is low: the account's own setting, or 10 % of its allowance."""
        threshold = self.__dict__.get("low_balance_threshold")
        return self.monthly_allowance // 10 if threshold is None else int(threshold)

    def _split(self, amount: int) -> tuple[int, int]:
        """Free allowance first, then top-ups; refuses what is not available."""
        if amount <= 0:
            raise InvalidAmount("The amount must be at least 1.")
        if amount > self.available:
            raise InsufficientCredits(f"{amount} credits asked, {self.available} available.")
        from_allowance = min(amount, max(self.free_allowance, 0))
        return from_allowance, amount - from_allowance

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
        from_allowance, from_topup = self._split(amount)
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
        carried = sum(int(h["from_allowance"]) for h in self.open_holds.values())
        self._record_reset(
            period=period,
            monthly_allowance=self.next_monthly_allowance,
            held_allowance_carried=carried,
        )
        return True

    @event("MonthlyAllowanceReset")
    def _record_reset(
        self, period: str, monthly_allowance: int, held_allowance_carried: int = 0
    ) -> None:
        # Unspent allowance does not roll over: the allowance is set, not added to.
        # Only what open holds reserve of it is carried over (see ledger/domain/holds.py).
        self.period = period
        self.monthly_allowance = monthly_allowance
        self.allowance_remaining = monthly_allowance + held_allowance_carried

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

    def set_low_balance_threshold(self, threshold: int | None) -> bool:
        """Set when ``available`` counts as low (None: 10 % of the allowance); False if unchanged."""
        if threshold is not None and threshold < 0:
            raise InvalidAmount("The low balance threshold must not be negative.")
        if threshold == self.__dict__.get("low_balance_threshold"):
            return False
        self._record_threshold(threshold=threshold)
        return True

    @event("LowBalanceThresholdSet")
    def _record_threshold(self, threshold: int | None) -> None:
        self.low_balance_threshold = threshold

    def hold(self, hold_id: str) -> OpenHold:
        """An open hold, or HoldNotFound (settled holds are no longer kept here)."""
        state = self.open_holds.get(hold_id)
        if state is None:
            raise HoldNotFound(hold_id)
        return OpenHold.from_state(state)

    def place_hold(self, hold_id: str, amount: int, reason: str, expires_at: datetime) -> OpenHold:
        """Reserve credits from the same buckets, in the same order, as a spend would."""
        if hold_id in self.open_holds:
            raise InvalidAmount(f"The hold {hold_id} is already open.")
        from_allowance, from_topup = self._split(amount)
        self._record_hold(
            hold_id=hold_id,
            amount=amount,
            from_allowance=from_allowance,
            from_topup=from_topup,
            reason=reason,
            expires_at=expires_at.isoformat(),
        )
        return self.hold(hold_id)

    @event("HoldPlaced")
    def _record_hold(
        self,
        hold_id: str,
        amount: int,
        from_allowance: int,
        from_topup: int,
        reason: str,
        expires_at: str,
    ) -> None:
        # Copied, never changed in place: the repository's cache shares this dict.
        self.holds = {
            **self.open_holds,
            hold_id: OpenHold(
                amount=amount,
                from_allowance=from_allowance,
                from_topup=from_topup,
                period=self.period,
                expires_at=expires_at,
                reason=reason,
            ).to_state(),
        }

    def _settlement(self, hold_id: str, captured: int) -> Settlement:
        hold = self.hold(hold_id)
        return settle(hold, captured, carried=hold.period != self.period)

    def capture_hold(self, hold_id: str, amount: int, now: datetime) -> Settlement:
        """Spend up to the held amount; the rest goes back (or lapses, see holds.py)."""
        hold = self.hold(hold_id)
        if hold.has_expired(now):
            raise HoldHasExpired(hold_id)
        if amount < 0:
            raise InvalidAmount("The amount must be at least 0.")
        if amount > hold.amount:
            raise CaptureExceedsHold(f"The hold reserves {hold.amount} credits; {amount} asked.")
        settlement = self._settlement(hold_id, amount)
        self._record_capture(hold_id=hold_id, **msgspec.structs.asdict(settlement))
        return settlement

    @event("HoldCaptured")
    def _record_capture(
        self,
        hold_id: str,
        captured: int,
        from_allowance: int,
        from_topup: int,
        released: int,
        lapsed: int,
    ) -> None:
        self._forget_hold(hold_id)
        self.allowance_remaining -= from_allowance + lapsed
        self.topup_balance -= from_topup

    def release_hold(self, hold_id: str) -> Settlement:
        """Give a hold's credits back without spending any."""
        settlement = self._settlement(hold_id, 0)
        self._record_release(
            hold_id=hold_id, released=settlement.released, lapsed=settlement.lapsed
        )
        return settlement

    @event("HoldReleased")
    def _record_release(self, hold_id: str, released: int, lapsed: int) -> None:
        self._forget_hold(hold_id)
        self.allowance_remaining -= lapsed

    def expire_hold(self, hold_id: str, now: datetime) -> Settlement | None:
        """Release a hold that reached its expiry; None if it is settled or not due."""
        state = self.open_holds.get(hold_id)
        if state is None or not OpenHold.from_state(state).has_expired(now):
            return None
        settlement = self._settlement(hold_id, 0)
        self._record_expiry(hold_id=hold_id, released=settlement.released, lapsed=settlement.lapsed)
        return settlement

    @event("HoldExpired")
    def _record_expiry(self, hold_id: str, released: int, lapsed: int) -> None:
        self._forget_hold(hold_id)
        self.allowance_remaining -= lapsed

    def _forget_hold(self, hold_id: str) -> None:
        self.holds = {k: v for k, v in self.open_holds.items() if k != hold_id}
