"""The ledger's rules, written plainly from the README, sharing no code with the ledger.

A disagreement between this model and the ledger is a finding; the README decides
which side is wrong. Everything here is integers and dicts: no import from ledger/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Hold:
    amount: int
    from_allowance: int
    period: str
    expires_at: datetime


@dataclass
class Account:
    """What an account must hold: "balance = allowance remaining + top-ups"."""

    monthly_allowance: int
    next_allowance: int
    allowance_remaining: int
    period: str
    topup: int = 0
    holds: dict[str, Hold] = field(default_factory=dict)

    @property
    def balance(self) -> int:
        return self.allowance_remaining + self.topup

    @property
    def held(self) -> int:
        return sum(h.amount for h in self.holds.values())

    @property
    def available(self) -> int:
        """ "available = balance - held": what can be spent or held now."""
        return self.balance - self.held

    def split(self, amount: int) -> tuple[int, int]:
        """ "Spending burns the allowance first (what open holds have not reserved), then top-ups"."""
        free = self.allowance_remaining - sum(h.from_allowance for h in self.holds.values())
        from_allowance = min(amount, max(free, 0))
        return from_allowance, amount - from_allowance

    def reset(self, period: str) -> None:
        """ "The allowance is set back to the plan; what open holds reserve of it is carried"."""
        carried = sum(h.from_allowance for h in self.holds.values())
        self.period = period
        self.monthly_allowance = self.next_allowance
        self.allowance_remaining = self.next_allowance + carried

    def settle(self, hold_id: str, captured: int) -> None:
        """ "A capture spends the carried share first; the rest of a carried share lapses"."""
        hold = self.holds.pop(hold_id)
        from_allowance = min(captured, hold.from_allowance)
        lapsed = hold.from_allowance - from_allowance if hold.period != self.period else 0
        self.allowance_remaining -= from_allowance + lapsed
        self.topup -= captured - from_allowance


# A dispute's statuses along one life (an inquiry, a chargeback won or lost), and how
# far along each is: "a status older than the one known is old news".
DISPUTE_LIVES = [
    ["warning_needs_response", "warning_under_review", "warning_closed"],
    ["warning_needs_response", "needs_response", "under_review", "won"],
    ["needs_response", "under_review", "lost"],
    ["needs_response", "won"],
]
STAGE = {
    "warning_needs_response": 0,
    "warning_under_review": 1,
    "needs_response": 2,
    "under_review": 3,
    "warning_closed": 4,
    "won": 4,
    "lost": 4,
}
BANK_HOLDS_THE_MONEY = {"needs_response", "under_review", "lost"}


@dataclass
class Session:
    """One purchase and the facts Stripe told about it, in whatever order."""

    account_id: str
    credits: int
    amount: int
    payment_intent: str
    status: str = "pending"  # pending, paid, expired
    refund_sent: int = 0  # what Stripe has sent so far (cumulative)
    refunded: int = 0  # the largest amount_refunded delivered
    disputes: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (status, amount)
    taken_back: int = 0  # credits refunds and disputes keep back now

    def learn_refund(self, amount_refunded: int) -> None:
        self.refunded = max(self.refunded, amount_refunded)

    def learn_dispute(self, dispute_id: str, status: str, amount: int) -> None:
        known = self.disputes.get(dispute_id)
        if known is None or STAGE[status] > STAGE[known[0]]:
            self.disputes[dispute_id] = (status, amount)

    def owed(self) -> int:
        """The README's rule: refunded credits round down; disputes take what the bank holds,
        never more than the refunds left."""
        if self.status != "paid":
            return 0
        refunded = self.credits * min(self.amount, self.refunded) // self.amount
        held_by_bank = sum(a for s, a in self.disputes.values() if s in BANK_HOLDS_THE_MONEY)
        disputed = min(
            self.credits - refunded, self.credits * min(self.amount, held_by_bank) // self.amount
        )
        return refunded + disputed
