"""The ledger's rules, written plainly from the README, sharing no code with the ledger.

A disagreement between this model and the ledger is a finding; the README decides
which side is wrong. Everything here is integers and dicts: no import from ledger/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

NEVER = datetime.max.replace(tzinfo=UTC)
DEFAULT_HOLD_SECONDS = 900
"""A hold's life when its request names none: "expires_in_seconds (1 s to 7 days, default 900)"."""


@dataclass
class Grant:
    """ "Credits given, not bought, with a priority and maybe an expiry"."""

    amount: int
    priority: int
    expires_at: datetime | None
    order: int
    remaining: int = -1
    status: str = "active"  # active, expired, voided
    spent: int = 0
    lapsed: int = 0

    def __post_init__(self) -> None:
        if self.remaining == -1:
            self.remaining = self.amount

    def usable_at(self, now: datetime) -> bool:
        """ "A spend decided after a grant's expires_at never uses it"."""
        return self.status == "active" and (self.expires_at is None or now < self.expires_at)

    def take(self, credits: int) -> None:
        self.remaining -= credits
        self.spent += credits

    def lapse(self, credits: int) -> None:
        self.remaining -= credits
        self.lapsed += credits


@dataclass
class Hold:
    amount: int
    from_allowance: int
    period: str
    expires_at: datetime
    from_grants: dict[str, int] = field(default_factory=dict)


@dataclass
class Part:
    """ "Of a debt a reset left owed, what the shares it carried, and those carried by later
    resets, may repay"."""

    origin: str
    amount: int


@dataclass
class Account:
    """What an account must hold: "balance = allowance remaining + granted + top-ups"."""

    monthly_allowance: int
    next_allowance: int
    allowance_remaining: int
    period: str
    topup: int = 0
    holds: dict[str, Hold] = field(default_factory=dict)
    reserved: int = 0
    """Of the top-ups holds reserve, what top-ups back ("a refund takes free top-ups first")."""
    pool: list[bool] = field(default_factory=list)
    """The held top-ups in the order captures take them ("a hold placed since puts its top-ups
    first"), each True if what a reset kept stands for it."""
    parts: list[Part] = field(default_factory=list)
    """Of the debt, what the allowance shares carried over resets may repay, part by part."""
    grants: dict[str, Grant] = field(default_factory=dict)
    low_threshold: int | None = None
    """Set for the account; None: the default."""
    low_armed: bool = False
    depleted_armed: bool = False
    alerts: dict[str, int] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        """What resets kept of the allowance for the rest of them."""
        return self.pool.count(True)

    def __post_init__(self) -> None:
        # "An account that opens low or empty has not crossed anything yet."
        self.low_armed = self.available >= self.threshold
        self.depleted_armed = self.available > 0

    @property
    def threshold(self) -> int:
        """The account's own, else "10 % of the current monthly allowance (rounded down)"."""
        if self.low_threshold is not None:
            return self.low_threshold
        return self.monthly_allowance // 10

    def watch(self) -> None:
        """ "credits.low_balance fires when available falls below the threshold, once per
        crossing; credits.depleted when it reaches zero or less", judged on what each
        command left (called after every step that touched the account)."""
        if self.available < self.threshold:
            if self.low_armed:
                self.low_armed = False
                self.alerts["credits.low_balance"] = self.alerts.get("credits.low_balance", 0) + 1
        else:
            self.low_armed = True
        if self.available <= 0:
            if self.depleted_armed:
                self.depleted_armed = False
                self.alerts["credits.depleted"] = self.alerts.get("credits.depleted", 0) + 1
        else:
            self.depleted_armed = True

    @property
    def granted(self) -> int:
        return sum(g.remaining for g in self.grants.values())

    @property
    def balance(self) -> int:
        return self.allowance_remaining + self.granted + self.topup

    @property
    def held(self) -> int:
        return sum(h.amount for h in self.holds.values())

    @property
    def available(self) -> int:
        """ "available = balance - held": what can be spent or held now."""
        return self.balance - self.held

    def reserved_of(self, grant_id: str) -> int:
        return sum(h.from_grants.get(grant_id, 0) for h in self.holds.values())

    def available_at(self, now: datetime) -> int:
        """What a command decided at ``now`` may spend or hold: not the free part of grants
        past their expiry, recorded or not."""
        unusable = sum(
            g.remaining - self.reserved_of(grant_id)
            for grant_id, g in self.grants.items()
            if not g.usable_at(now)
        )
        return self.available - unusable

    def burn_order(self) -> list[str]:
        """ "Lowest priority first, then the soonest expiry (never: last), then the oldest"."""
        return sorted(
            self.grants,
            key=lambda g: (
                self.grants[g].priority,
                self.grants[g].expires_at or NEVER,
                self.grants[g].order,
            ),
        )

    def split(self, amount: int, now: datetime) -> tuple[int, dict[str, int], int]:
        """ "Spends burn the free allowance, then grants in burn order, then top-ups"."""
        free = (
            self.allowance_remaining
            - sum(h.from_allowance for h in self.holds.values())
            - self.kept
        )
        from_allowance = min(amount, max(free, 0))
        rest = amount - from_allowance
        from_grants = {}
        for grant_id in self.burn_order():
            grant = self.grants[grant_id]
            if rest and grant.usable_at(now):
                taken = min(rest, grant.remaining - self.reserved_of(grant_id))
                if taken > 0:
                    from_grants[grant_id] = taken
                    rest -= taken
        return from_allowance, from_grants, rest

    def spend(self, amount: int, now: datetime) -> tuple[int, dict[str, int], int]:
        from_allowance, from_grants, from_topup = self.split(amount, now)
        self.allowance_remaining -= from_allowance
        for grant_id, taken in from_grants.items():
            self.grants[grant_id].take(taken)
        self.topup -= from_topup
        return from_allowance, from_grants, from_topup

    def close_grant(self, grant_id: str, status: str) -> int:
        """ "What remains lapses, except what open holds reserve: that lapses when they settle"."""
        grant = self.grants[grant_id]
        lapsed = grant.remaining - self.reserved_of(grant_id)
        grant.lapse(lapsed)
        grant.status = status
        return lapsed

    def reset(self, period: str) -> None:
        """ "The allowance is set back to the plan; what open holds reserve of it is carried"."""
        carried = sum(h.from_allowance for h in self.holds.values())
        # "What a clawback's debt kept from being spent, the allowance that lapses, repays
        # it": top-ups below zero; what open holds reserve of top-ups a clawback took is
        # kept for them (first kept from use are free top-ups: the allowance burns first).
        carried += self.kept
        lapsing = self.allowance_remaining - carried
        repaid = max(min(lapsing, -self.topup), 0)
        # "Of the debt, it repays first what the shares carried before could not, then their
        # parts: together they may repay no more than it leaves owed" (the newest goes first).
        owed = max(-self.topup, 0)
        left = owed - repaid
        for part in sorted(self.parts, key=lambda p: p.origin):
            part.amount = min(part.amount, left)
            left -= part.amount
        self.parts = [p for p in self.parts if p.amount]
        self.topup += repaid
        unbacked = self.held_topup - self.reserved - self.kept
        kept_from_use = unbacked - max(self.topup - self.reserved, 0)
        kept = max(min(lapsing - repaid, kept_from_use), 0)
        # "For the top-ups it found nothing backed, after those it found backed."
        backed, keeping = self.reserved, kept
        for n, is_kept in enumerate(self.pool):
            if not is_kept and keeping:
                if backed:
                    backed -= 1
                else:
                    self.pool[n] = True
                    keeping -= 1
        # "The shares it carries may repay what it left owed beyond those parts", and those
        # parts, whichever lapses first; shares carried before may not repay theirs.
        placed = sum(h.from_allowance for h in self.holds.values() if h.period == self.period)
        if new := min(placed, left):
            self.parts.append(Part(self.period, new))
        self.period = period
        self.monthly_allowance = self.next_allowance
        self.allowance_remaining = self.next_allowance + carried + kept

    @property
    def held_topup(self) -> int:
        return sum(self.topup_share(h) for h in self.holds.values())

    def place(self, hold_id: str, hold: Hold) -> None:
        self.holds[hold_id] = hold
        self.reserved += self.topup_share(hold)
        self.pool[:0] = [False] * self.topup_share(hold)

    def take_back(self, credits: int) -> None:
        """A refund or dispute takes top-ups back (or gives them back: negative)."""
        if credits < 0:
            self.credit(-credits)
            return
        self.topup -= credits
        self.reserved = min(self.reserved, max(self.topup, 0))

    def credit(self, credits: int) -> None:
        """A purchase or a dispute's restore: what comes above zero backs held top-ups a
        refund took before it is free."""
        above_zero = max(self.topup + credits, 0) - max(self.topup, 0)
        self.topup += credits
        self.reserved += min(above_zero, max(self.held_topup - self.kept - self.reserved, 0))

    @staticmethod
    def topup_share(hold: Hold) -> int:
        return hold.amount - hold.from_allowance - sum(hold.from_grants.values())

    def settle(self, hold_id: str, captured: int) -> None:
        """ "A capture spends the allowance share first, then its grant shares, then top-ups;
        the rest of a carried allowance share, or of a closed grant's share, lapses"."""
        hold = self.holds.pop(hold_id)
        from_allowance = min(captured, hold.from_allowance)
        lapsed = hold.from_allowance - from_allowance if hold.period != self.period else 0
        self.allowance_remaining -= from_allowance + lapsed
        rest = captured - from_allowance
        for grant_id, share in hold.from_grants.items():
            grant = self.grants[grant_id]
            taken = min(rest, share)
            rest -= taken
            grant.take(taken)
            if grant.status != "active":
                grant.lapse(share - taken)
        # "A capture takes the first held top-ups: what was kept for them is spent, the rest
        # from top-ups (below zero if need be); what was kept for the last, which go with
        # what it does not capture, lapses."
        kept_before = self.kept
        kept_spent = self.pool[:rest].count(True)
        del self.pool[:rest]
        del self.pool[len(self.pool) - (self.topup_share(hold) - rest) :]
        self.topup -= rest - kept_spent
        from_reserved = min(rest - kept_spent, self.reserved)
        self.reserved = min(self.reserved - from_reserved, self.pool.count(False))
        self.allowance_remaining -= kept_before - self.kept
        # "Of the allowance that lapses, up to the debt goes to the top-up balance": a
        # carried share lapsing when its hold settles, as at a reset.
        # Only parts the share may repay: its own first, then older ones, the newest first.
        usable = [p for p in self.parts if p.origin <= hold.period]
        repaid = max(min(lapsed, -self.topup, sum(p.amount for p in usable)), 0)
        self.topup += repaid
        for part in sorted(usable, key=lambda p: p.origin, reverse=True):
            less = min(part.amount, repaid)
            part.amount -= less
            repaid -= less
        self.parts = [p for p in self.parts if p.amount]


# A dispute's statuses along one life (an inquiry, a chargeback won or lost, a loss
# appealed and won or lost again), and how far along each is: "a status older than the one
# known is old news"; won ends every life.
DISPUTE_LIVES = [
    ["warning_needs_response", "warning_under_review", "warning_closed"],
    ["warning_needs_response", "needs_response", "under_review", "won"],
    ["needs_response", "under_review", "lost"],
    ["needs_response", "won"],
    ["needs_response", "lost", "appeal_needs_response", "appeal_under_review", "won"],
    ["needs_response", "lost", "appeal_needs_response", "appeal_under_review", "lost"],
    # Not Stripe's (a stand-in's, a replay's): an inquiry closed, then escalated, then closed
    # every way there is. "Whichever closed status moved the most money counts."
    ["warning_needs_response", "warning_closed", "needs_response", "charge_refunded", "lost"],
]
# Every status its own stage: two closed ones go by money (none; a refund's; the bank's).
STAGE = {
    "warning_needs_response": 0,
    "warning_under_review": 1,
    "needs_response": 2,
    "under_review": 3,
    "warning_closed": 4,
    "charge_refunded": 5,
    "lost": 6,
    "appeal_needs_response": 7,
    "appeal_under_review": 8,
    "won": 9,
}
BANK_HOLDS_THE_MONEY = {
    "needs_response",
    "under_review",
    "lost",
    "appeal_needs_response",
    "appeal_under_review",
}

# How far along a refund is: "a status only moves forward (pending/requires_action ->
# succeeded -> failed/canceled, which end it), so an older one is old news".
REFUND_STEPS = {"pending": 0, "requires_action": 0, "succeeded": 1, "failed": 2, "canceled": 2}
NO_MONEY_RETURNED = {"failed", "canceled"}


@dataclass
class Session:
    """One purchase and the facts Stripe told about it, in whatever order."""

    account_id: str
    credits: int
    amount: int
    payment_intent: str
    status: str = "pending"  # pending, paid, expired, failed, mismatched
    refund_sent: int = 0  # the charge's amount_refunded at Stripe now (what the world sent)
    refunds_made: dict[str, int] = field(default_factory=dict)  # at Stripe: every one, by id
    live_refunds: dict[str, int] = field(default_factory=dict)  # at Stripe: not failed, by id
    refunded: int = 0  # the largest amount_refunded delivered
    refunds: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (status, amount)
    disputes: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (status, amount)
    taken_back: tuple[int, int] = (0, 0)  # credits refunds, and disputes, keep back now

    def learn_refund(self, amount_refunded: int) -> None:
        self.refunded = max(self.refunded, amount_refunded)

    def learn_refund_status(self, refund_id: str, status: str, amount: int) -> None:
        """A refund told of by its id: its latest status, and its amount (its own, which no
        later event changes)."""
        known = self.refunds.get(refund_id)
        if status not in REFUND_STEPS:
            return
        if known is None:
            self.refunds[refund_id] = (status, amount)
        elif REFUND_STEPS[status] > REFUND_STEPS[known[0]]:
            self.refunds[refund_id] = (status, known[1])

    def money_refunded(self) -> int:
        """What the customer got back, by the README's rule, from what was delivered: the
        largest amount_refunded may still count refunds that failed since (Stripe lowers its
        figure then, sending no new charge.refunded), so those come off it; and the refunds
        known by id, still alive, were returned whatever figure came (one made after
        another failed is not all in the old figure). The larger of the two; never below
        zero, never above what was paid."""
        failed = live = 0
        for status, amount in self.refunds.values():
            if status in NO_MONEY_RETURNED:
                failed += amount
            else:
                live += amount
        # Stripe's figure is never above what was paid (counted so if it were).
        return min(self.amount, max(min(self.refunded, self.amount) - failed, live, 0))

    def learn_dispute(self, dispute_id: str, status: str, amount: int) -> None:
        known = self.disputes.get(dispute_id)
        # The same status again counts the most money told of it (README).
        if (
            known is None
            or STAGE[status] > STAGE[known[0]]
            or (status == known[0] and amount > known[1])
        ):
            self.disputes[dispute_id] = (status, amount)

    def shown_as(self) -> str:
        """The purchase's status: paid and refunded in full, "refunded"; a refund that fails
        makes it "paid" again."""
        if self.status == "paid" and self.money_refunded() >= self.amount:
            return "refunded"
        return self.status

    def owed(self) -> tuple[int, int]:
        """The credits refunds, and disputes, keep back, by the README's rule: refunded credits
        round down, disputed ones up; disputes take what the bank holds, never more than the
        refunds left. A refund that fails gives back what it took (and what it took from
        a dispute's share, the dispute takes again). Apart: a refund after a dispute moves credits both ways, even where the
        sum stays (the dispute's part given back, the refund's taken)."""
        if self.status != "paid":
            return (0, 0)
        refunded = self.credits * self.money_refunded() // self.amount
        held_by_bank = sum(a for s, a in self.disputes.values() if s in BANK_HOLDS_THE_MONEY)
        disputed = min(
            self.credits - refunded,
            -(-self.credits * min(self.amount, held_by_bank) // self.amount),
        )
        return (refunded, disputed)
