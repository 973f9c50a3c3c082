"""The credit account: a monthly allowance, grants and purchased top-ups.

Rules are the public methods (guard clauses first, then the event); what each
event does to the state is ``evolve``. Every attribute holds an immutable value
(numbers, strings, frozen structs) or a dict of them that events replace rather
than change: a copy made with ``copy_of`` is a real copy, which is what the
repository's cache relies on (and checks, see ``ledger/store/repository.py``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
from eventsourcing.domain import Aggregate

from ledger.domain.errors import (
    CaptureExceedsHold,
    GrantClosed,
    GrantNotFound,
    HoldHasExpired,
    HoldNotFound,
    InsufficientCredits,
    InvalidAccountId,
    InvalidAmount,
    InvalidGrant,
    InvalidPeriod,
    InvalidReason,
    PeriodOutOfOrder,
)
from ledger.domain.events import (
    AccountOpened,
    CreditsClawedBack,
    CreditsGranted,
    CreditsPurchased,
    CreditsRestored,
    CreditsReversed,
    CreditsSpent,
    GrantExpired,
    GrantVoided,
    HoldCaptured,
    HoldExpired,
    HoldPlaced,
    HoldReleased,
    LowBalanceThresholdSet,
    MonthlyAllowanceChanged,
    MonthlyAllowanceReset,
    low_balance_threshold,
)
from ledger.domain.evolution import Evolution, Records
from ledger.domain.grants import ACTIVE, EXPIRED, VOIDED, Grant, in_burn_order
from ledger.domain.holds import (
    HeldTotals,
    KeptPart,
    OpenHold,
    RepayablePart,
    Settlement,
    backed,
    kept_after_reset,
    placed_ahead,
    repaid_by,
    repayable_after_reset,
    repayable_by,
    repaying,
    settle,
    settled_kept,
)
from ledger.domain.ids import account_stream_id
from ledger.domain.limits import MAX_MONTHLY_ALLOWANCE, MAX_PRIORITY, MAX_REASON_LENGTH

ACCOUNT_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}"
PERIOD_PATTERN = r"[0-9]{4}-(0[1-9]|1[0-2])"  # not \d: it takes any script's digits
MAX_GRANT = 1_000_000_000


def check_allowance(monthly_allowance: int) -> None:
    """InvalidAmount unless the allowance is 0 to ``MAX_MONTHLY_ALLOWANCE`` credits."""
    if not 0 <= monthly_allowance <= MAX_MONTHLY_ALLOWANCE:
        raise InvalidAmount(f"The monthly allowance must be 0 to {MAX_MONTHLY_ALLOWANCE} credits.")


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


def in_utc_years(moment: datetime) -> bool:
    """Whether ``moment`` is a time PostgreSQL and Python can both hold (years 1-9999 in UTC)."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def kept_as_written(moment: datetime) -> bool:
    """Whether ``moment`` is in the years 1-9999 in UTC and read back as written: not the
    first microsecond of year 1 nor the last of 9999, which asyncpg writes as PostgreSQL's
    -infinity and infinity and reads back without their offset."""
    return in_utc_years(moment) and _FIRST_MOMENT < moment.astimezone(UTC) < _LAST_MOMENT


def offset_in_whole_minutes(moment: datetime) -> bool:
    """Whether ``moment``'s UTC offset is whole minutes, as RFC 3339 writes offsets.

    Python takes an offset with seconds (``+05:30:15``, from ``datetime.fromisoformat``),
    but msgspec writes it without them (another instant: a snapshot of a grant expiring
    then moved its expiry 15 s) and refuses to read it back."""
    offset = moment.utcoffset()
    return offset is None or offset % timedelta(minutes=1) == timedelta(0)


_FIRST_MOMENT = datetime.min.replace(tzinfo=UTC)
_LAST_MOMENT = datetime.max.replace(tzinfo=UTC)


REASON_PATTERN = r"^[^\x00]*$"
"""Any text but a NUL character: PostgreSQL's text cannot hold one, so no view could show it."""


def check_reason(reason: str) -> None:
    """Refuse a reason the views could not keep (a NUL character), or one too long to show."""
    if "\x00" in reason:
        raise InvalidReason("The reason must not contain a NUL character.")
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidReason(f"The reason must be at most {MAX_REASON_LENGTH} characters.")


on = Evolution()


class CreditAccount(Records, Aggregate):
    """What one customer may spend: allowance first, then grants, then top-ups."""

    class_version = 8
    """Of its snapshots: version 2 keeps holds as structs and always has a threshold;
    version 3 keeps grants; version 4 what backs the holds' top-up shares; version 5 what
    each open hold's allowance share may repay of a debt; version 6 what the carried shares
    may repay together (``carried_repayable``), in place of that; version 7 that in parts,
    one for each reset that left one owed, its shares' (``RepayablePart``); version 8 which
    held top-ups what resets kept for them stands for (``kept_parts``)."""

    DERIVED_STATE = ("held_totals",)
    """Made from the rest, kept so that decisions need not go through every hold: not in
    snapshots (``ledger.store.repository.snapshot_of``), made again by ``restore_state``,
    so that snapshots are as they were before it was kept, and any version reads another's."""

    if TYPE_CHECKING:  # set by evolve(); annotations at run time would make them __init__ arguments
        account_id: str
        monthly_allowance: int
        next_monthly_allowance: int
        allowance_remaining: int
        topup_balance: int
        period: str
        holds: dict[str, OpenHold]
        held_totals: HeldTotals
        low_balance_threshold: int | None
        grants: dict[str, Grant]
        granted: int
        closed_grants: frozenset[str]
        topup_reserved: int
        kept_for_holds: int
        kept_parts: tuple[KeptPart, ...]
        carried_repayable: tuple[RepayablePart, ...]

    @classmethod
    def open(cls, account_id: str, monthly_allowance: int, period: str) -> CreditAccount:
        """A new account with its full allowance available for ``period``."""
        check_account_id(account_id)
        check_period(period)
        check_allowance(monthly_allowance)
        return cls._create(
            AccountOpened,
            id=account_stream_id(account_id),
            account_id=account_id,
            monthly_allowance=monthly_allowance,
            period=period,
        )

    # --- what it holds -------------------------------------------------------------------

    @property
    def balance(self) -> int:
        """Credits the account holds, including those reserved by open holds."""
        return self.allowance_remaining + self.granted + self.topup_balance

    @property
    def held(self) -> int:
        """Credits reserved by open holds."""
        return self.held_totals.held

    @property
    def available(self) -> int:
        """Credits that can be spent or held now: the balance less what holds reserve."""
        # balance and held written out: no property call of its own for each (a replay's
        # overdraw check asks this of every spend and hold).
        return self.allowance_remaining + self.granted + self.topup_balance - self.held_totals.held

    def balances(self) -> tuple[int, int, int]:
        """``balance``, ``held`` and ``available`` at once, as an answer shows them: one call
        for the three properties' (~1.5k instructions fewer a spend's answer, callgrind)."""
        held = self.held_totals.held
        balance = self.allowance_remaining + self.granted + self.topup_balance
        return balance, held, balance - held

    def available_at(self, moment: datetime | None) -> int:
        """What can be spent or held by a command decided at ``moment``: grants past their
        expiry no longer count, even before their expiry is recorded."""
        available = self.available
        if self.grants and moment is not None:
            for grant_id, grant in self.grants.items():
                if grant.expires_at is not None and moment >= grant.expires_at:
                    available -= self.free_of_grant(grant_id)
        return available

    def free_of_grant(self, grant_id: str) -> int:
        """What of a grant is neither spent nor reserved by open holds."""
        return self.grants[grant_id].remaining - self.held_totals.of_grants.get(grant_id, 0)

    @property
    def free_allowance(self) -> int:
        """This period's allowance that is neither spent nor held (nor kept for holds)."""
        return self.allowance_remaining - self.kept_for_holds - self.held_totals.from_allowance

    @property
    def held_allowance(self) -> int:
        """What open holds reserve of the allowance."""
        return self.held_totals.from_allowance

    @property
    def held_topup(self) -> int:
        """What open holds reserve of the top-ups."""
        return self.held_totals.from_topup

    @property
    def effective_low_balance_threshold(self) -> int:
        """Below this ``available`` is low: the account's own setting, or 10 % of its allowance."""
        return low_balance_threshold(self.monthly_allowance, self.low_balance_threshold)

    def holds_due(self, at: datetime) -> list[str]:
        """The open holds past their expiry at ``at``, in the order they were placed."""
        due = self.held_totals.due(at)
        return [hold_id for hold_id in self.holds if hold_id in due] if due else []

    def hold(self, hold_id: str) -> OpenHold:
        """An open hold, or HoldNotFound (settled holds are no longer kept here)."""
        found = self.holds.get(hold_id)
        if found is None:
            raise HoldNotFound(hold_id)
        return found

    # --- rules ---------------------------------------------------------------------------

    def split(self, amount: int, at: datetime | None) -> tuple[int, dict[str, int], int]:
        """Free allowance first, then grants in burn order, then top-ups; refuses what
        is not available at ``at``. Returns (from allowance, from each grant, from top-ups):
        what a spend or hold decided at ``at`` takes (the audit judges recorded ones by it)."""
        if amount <= 0:
            raise InvalidAmount("The amount must be at least 1.")
        available = self.available_at(at)
        if amount > available:
            raise InsufficientCredits(f"{amount} credits asked, {available} available.")
        from_allowance = min(amount, max(self.free_allowance, 0))
        rest = amount - from_allowance
        from_grants: dict[str, int] = {}
        for grant_id, grant in self.grants.items():  # kept in burn order
            if rest == 0:
                break
            if not grant.usable_at(at):
                continue
            taken = min(rest, self.free_of_grant(grant_id))
            if taken > 0:
                from_grants[grant_id] = taken
                rest -= taken
        return from_allowance, from_grants, rest

    def purchase(self, session_id: str, credits: int) -> None:
        """Add a paid top-up; it survives every monthly reset until spent."""
        if credits <= 0:
            raise InvalidAmount("A purchase adds a positive number of credits.")
        self.trigger_event(CreditsPurchased, session_id=session_id, credits=credits)

    def claw_back(self, session_id: str, credits: int) -> None:
        """Take back a refunded purchase's credits, even past zero (see README: clawbacks)."""
        if credits > 0:
            self.trigger_event(CreditsClawedBack, session_id=session_id, credits=credits)

    def reverse_for_dispute(self, session_id: str, dispute_id: str, credits: int) -> None:
        """Take back a disputed purchase's credits while the bank holds its money."""
        if credits > 0:
            self.trigger_event(
                CreditsReversed, session_id=session_id, dispute_id=dispute_id, credits=credits
            )

    def restore_after_dispute(self, session_id: str, dispute_id: str, credits: int) -> None:
        """Give back credits a dispute had taken back."""
        if credits > 0:
            self.trigger_event(
                CreditsRestored, session_id=session_id, dispute_id=dispute_id, credits=credits
            )

    def restore_after_refund(self, session_id: str, refund_id: str, credits: int) -> None:
        """Give back credits a refund's clawback took: the refund failed, its money never left."""
        if credits > 0:
            self.trigger_event(
                CreditsRestored,
                session_id=session_id,
                dispute_id="",
                credits=credits,
                refund_id=refund_id,
            )

    def spend(self, amount: int, reason: str, at: datetime | None = None) -> CreditsSpent:
        """Burn the allowance first, then grants, then top-ups; never overdraw.

        ``at`` is the command's time: grants past their expiry then are not used.
        Returns the event recorded (what came from each bucket and grant). Raises
        InsufficientCredits and records nothing when the balance is short.
        """
        check_reason(reason)
        from_allowance, from_grants, from_topup = self.split(amount, at)
        self.trigger_event(
            CreditsSpent,
            timestamp=at,  # the time the grants' expiry was judged at, for the audit
            amount=amount,
            from_allowance=from_allowance,
            from_topup=from_topup,
            reason=reason,
            from_grants=from_grants,
        )
        spent: CreditsSpent = self._pending_events[-1]  # type: ignore[assignment]
        return spent

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
        carried, debt_repaid, kept = self.reset_figures()
        self.trigger_event(
            MonthlyAllowanceReset,
            period=period,
            monthly_allowance=self.next_monthly_allowance,
            held_allowance_carried=carried,
            debt_repaid=debt_repaid,
            held_topup_kept=kept,
        )
        return True

    def reset_figures(self) -> tuple[int, int, int]:
        """What a reset now carries over of the allowance (what open holds reserve of it, and
        what earlier resets kept for them), repays of a clawback's debt, and keeps for open
        holds' top-up shares that a clawback took.

        A debt keeps as much of the balance from being spent; the allowance is spent first,
        so what it kept is in what lapses now, and that pays the debt: left alone, it kept as
        much of every month's allowance. Top-ups below zero are owed: they are repaid. Top-ups
        open holds reserve but a clawback took are owed only if the holds capture them: what
        lapses is kept for that (see ledger/domain/holds.py), not repaid into the top-ups,
        where a release would have made it credits for good.
        """
        carried = self.held_allowance + self.kept_for_holds
        lapsing = self.allowance_remaining - carried
        debt_repaid = max(min(lapsing, -self.topup_balance), 0)
        unbacked = self.held_topup - self.topup_reserved - self.kept_for_holds
        # Spends burn the allowance first: free top-ups are what the unbacked kept from use first.
        kept_from_use = unbacked - max(self.topup_balance - self.topup_reserved, 0)
        return carried, debt_repaid, max(min(lapsing - debt_repaid, kept_from_use), 0)

    def change_allowance(self, monthly_allowance: int) -> bool:
        """Change the plan's allowance from the next reset on; False if it is unchanged."""
        check_allowance(monthly_allowance)
        if monthly_allowance == self.next_monthly_allowance:
            return False
        self.trigger_event(MonthlyAllowanceChanged, monthly_allowance=monthly_allowance)
        return True

    def set_low_balance_threshold(self, threshold: int | None) -> bool:
        """Set when ``available`` counts as low (None: 10 % of the allowance); False if unchanged."""
        if threshold is not None and threshold < 0:
            raise InvalidAmount("The low balance threshold must not be negative.")
        if threshold == self.low_balance_threshold:
            return False
        self.trigger_event(LowBalanceThresholdSet, threshold=threshold)
        return True

    def place_hold(
        self,
        hold_id: str,
        amount: int,
        reason: str,
        expires_at: datetime,
        at: datetime | None = None,
    ) -> OpenHold:
        """Reserve credits from the same buckets, in the same order, as a spend would."""
        if hold_id in self.holds:
            raise InvalidAmount(f"The hold {hold_id} is already open.")
        check_reason(reason)
        from_allowance, from_grants, from_topup = self.split(amount, at)
        self.trigger_event(
            HoldPlaced,
            timestamp=at,
            hold_id=hold_id,
            amount=amount,
            from_allowance=from_allowance,
            from_topup=from_topup,
            reason=reason,
            expires_at=expires_at.isoformat(),
            from_grants=from_grants,
        )
        return self.hold(hold_id)

    def settlement(self, hold_id: str, captured: int) -> Settlement:
        """How an open hold's credits part if ``captured`` of them are spent now (the rule of
        ledger/domain/holds.py; the audit judges recorded settlements by it)."""
        hold = self.hold(hold_id)
        closed = frozenset(
            grant_id for grant_id, _ in hold.from_grants if self.grants[grant_id].status != ACTIVE
        )
        settlement = settle(
            hold, captured, carried=hold.period != self.period, closed_grants=closed
        )
        return repaying(
            backed(
                settlement,
                hold.from_topup,
                parts=self.kept_parts,
                held=self.held_topup,
                kept=self.kept_for_holds,
            ),
            topup_balance=self.topup_balance,
            repayable=repayable_by(self.carried_repayable, hold.period),
        )

    def capture_hold(self, hold_id: str, amount: int, now: datetime) -> Settlement:
        """Spend up to the held amount; the rest goes back (or lapses, see holds.py)."""
        hold = self.hold(hold_id)
        if hold.has_expired(now):
            # In UTC with a "Z", as the API answers every time (and the expiry's answer it)
            expired_at = hold.due_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
            raise HoldHasExpired(f"The hold {hold_id} expired at {expired_at}.")
        if amount < 0:
            raise InvalidAmount("The amount must be at least 0.")
        if amount > hold.amount:
            raise CaptureExceedsHold(f"The hold reserves {hold.amount} credits; {amount} asked.")
        settlement = self.settlement(hold_id, amount)
        self.trigger_event(
            HoldCaptured,
            timestamp=now,  # the time the hold's expiry was judged at, as for a spend
            hold_id=hold_id,
            captured=settlement.captured,
            from_allowance=settlement.from_allowance,
            from_topup=settlement.from_topup,
            released=settlement.released,
            lapsed=settlement.lapsed,
            from_grants=settlement.from_grants,
            grants_lapsed=settlement.grants_lapsed,
            kept_spent=settlement.kept_spent,
            kept_lapsed=settlement.kept_lapsed,
            debt_repaid=settlement.debt_repaid,
        )
        return settlement

    def release_hold(self, hold_id: str) -> Settlement:
        """Give a hold's credits back without spending any."""
        return self._give_back(HoldReleased, hold_id)

    def expire_hold(self, hold_id: str, now: datetime) -> Settlement | None:
        """Release a hold that reached its expiry; None if it is settled or not due."""
        hold = self.holds.get(hold_id)
        if hold is None or not hold.has_expired(now):
            return None
        return self._give_back(HoldExpired, hold_id, now)  # at the time judged due

    def _give_back(
        self,
        kind: type[HoldReleased | HoldExpired],
        hold_id: str,
        timestamp: datetime | None = None,
    ) -> Settlement:
        """Settle a hold spending none of it, recorded as ``kind``."""
        settlement = self.settlement(hold_id, 0)
        self.trigger_event(
            kind,
            timestamp=timestamp,
            hold_id=hold_id,
            released=settlement.released,
            lapsed=settlement.lapsed,
            grants_lapsed=settlement.grants_lapsed,
            kept_lapsed=settlement.kept_lapsed,
            debt_repaid=settlement.debt_repaid,
        )
        return settlement

    def grant(
        self,
        grant_id: str,
        amount: int,
        *,
        priority: int,
        expires_at: datetime | None,
        reason: str,
        at: datetime,
    ) -> Grant:
        """Give credits that are not bought (see ledger/domain/grants.py)."""
        if not 1 <= amount <= MAX_GRANT:
            raise InvalidAmount(f"A grant is 1 to {MAX_GRANT} credits.")
        if not 0 <= priority <= MAX_PRIORITY:
            raise InvalidGrant(f"A grant's priority is 0 to {MAX_PRIORITY}.")
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidGrant("A grant's expires_at must have an offset, or it names no instant.")
        if expires_at is not None and not kept_as_written(expires_at):
            raise InvalidGrant("A grant's expires_at must fall within the years 1 to 9999 in UTC.")
        if expires_at is not None and not offset_in_whole_minutes(expires_at):
            raise InvalidGrant("A grant's expires_at must have an offset in whole minutes.")
        if expires_at is not None and expires_at <= at:
            raise InvalidGrant("A grant's expires_at must be in the future.")
        if grant_id in self.grants or grant_id in self.closed_grants:
            raise InvalidGrant(f"The grant {grant_id} exists already.")
        check_reason(reason)
        self.trigger_event(
            CreditsGranted,
            grant_id=grant_id,
            amount=amount,
            priority=priority,
            expires_at=None if expires_at is None else expires_at.isoformat(),
            reason=reason,
        )
        return self.grants[grant_id]

    def expire_grant(self, grant_id: str, at: datetime) -> int | None:
        """Let what remains of a grant past its expiry lapse; None if it is not due or closed."""
        grant = self.grants.get(grant_id)
        if grant is None or grant.status != ACTIVE or not grant.has_expired(at):
            return None
        lapsed = self.free_of_grant(grant_id)
        self.trigger_event(GrantExpired, timestamp=at, grant_id=grant_id, lapsed=lapsed)
        return lapsed

    def expire_due_grants(self, at: datetime, due_before: datetime | None = None) -> None:
        """Record the expiry of each active grant past it at ``at`` (with ``due_before``, only
        of those whose expiry came before then), as the sweeper would."""
        for grant_id, grant in list(self.grants.items()):
            if due_before is None or (
                grant.expires_at is not None and grant.expires_at < due_before
            ):
                self.expire_grant(grant_id, at)  # None for one not due, or closed

    def void_grant(self, grant_id: str, reason: str, at: datetime | None = None) -> int:
        """Withdraw a grant: what remains lapses now (what holds reserve, when they settle).

        A grant past its expiry at ``at`` has expired, even before its expiry is recorded."""
        grant = self.grants.get(grant_id)
        if grant is None or not grant.usable_at(at):
            if grant is not None or grant_id in self.closed_grants:
                raise GrantClosed(f"The grant {grant_id} has already expired or been voided.")
            raise GrantNotFound(grant_id)
        check_reason(reason)
        lapsed = self.free_of_grant(grant_id)
        self.trigger_event(GrantVoided, grant_id=grant_id, lapsed=lapsed, reason=reason)
        return lapsed

    # --- how events change it ------------------------------------------------------------

    evolve = on.evolve

    @on(AccountOpened)
    def _opened(self, event: AccountOpened) -> None:
        self.account_id = event.account_id
        self.monthly_allowance = event.monthly_allowance
        self.next_monthly_allowance = event.monthly_allowance
        self.allowance_remaining = event.monthly_allowance
        self.topup_balance = 0
        self.period = event.period
        self.holds = {}
        self.held_totals = HeldTotals()
        self.low_balance_threshold = None
        self.grants = {}
        self.granted = 0  # what remains of its grants, including what open holds reserve
        self.closed_grants = frozenset()
        self.topup_reserved = 0  # of the held top-ups, what top-ups back (see holds.py)
        self.kept_for_holds = 0  # of the allowance, what resets kept for the rest of them
        self.kept_parts = ()  # which of the held top-ups that stands for
        self.carried_repayable = ()  # of a debt, what carried allowance shares may repay

    @on(CreditsPurchased, CreditsRestored)
    def _credited(self, event: CreditsPurchased | CreditsRestored) -> None:
        # A negative top-up balance (credits clawed back after they were spent)
        # is repaid first by the next purchase, simply by adding.
        # (Comparisons, not min() and max(), and the held totals read, not ``held_topup``:
        # in CPython 3.11 each call of those costs ~1,000 instructions, and every paid
        # delivery and every replay of a purchase applies this.)
        before = self.topup_balance
        after = before + event.credits
        above_zero = (after if after > 0 else 0) - (before if before > 0 else 0)
        self.topup_balance = after
        # What comes above zero backs held top-ups a refund took before it is free, as
        # ``available`` counts it (and as a snapshot from before topup_reserved is read).
        unbacked = self.held_totals.from_topup - self.kept_for_holds - self.topup_reserved
        backs = unbacked if unbacked > 0 else 0  # min(above_zero, max(unbacked, 0))
        self.topup_reserved += above_zero if above_zero < backs else backs

    @on(CreditsClawedBack, CreditsReversed)
    def _debited(self, event: CreditsClawedBack | CreditsReversed) -> None:
        self.topup_balance -= event.credits
        # What is taken back is taken from the free top-ups first.
        self.topup_reserved = min(self.topup_reserved, max(self.topup_balance, 0))

    @on(CreditsSpent)
    def _spent(self, event: CreditsSpent) -> None:
        self.allowance_remaining -= event.from_allowance
        self.topup_balance -= event.from_topup
        if event.from_grants:
            self._take_from_grants(event.from_grants)

    @on(MonthlyAllowanceReset)
    def _reset(self, event: MonthlyAllowanceReset) -> None:
        # Unspent allowance does not roll over: the allowance is set, not added to.
        # Only what open holds reserve of it is carried over (see ledger/domain/holds.py).
        ended = self.period
        self.period = event.period
        self.monthly_allowance = event.monthly_allowance
        self.allowance_remaining = event.monthly_allowance + event.held_allowance_carried
        owed = max(-self.topup_balance, 0)
        self.topup_balance += event.debt_repaid
        if event.debt_repaid > owed:  # recorded before resets kept for held top-ups
            self.topup_reserved = min(
                self.topup_reserved + event.debt_repaid - owed, self.held_topup
            )
        if self.holds or self.carried_repayable:
            self.carried_repayable = repayable_after_reset(
                self.carried_repayable, self.holds, ended, owed=owed, repaid=event.debt_repaid
            )
        if event.held_topup_kept:
            self.kept_parts = kept_after_reset(
                self.kept_parts,
                self.held_topup,
                backed_topups=self.topup_reserved,
                kept=event.held_topup_kept,
            )
        self.allowance_remaining += event.held_topup_kept
        self.kept_for_holds += event.held_topup_kept

    @on(MonthlyAllowanceChanged)
    def _plan_changed(self, event: MonthlyAllowanceChanged) -> None:
        self.next_monthly_allowance = event.monthly_allowance

    @on(LowBalanceThresholdSet)
    def _threshold_set(self, event: LowBalanceThresholdSet) -> None:
        self.low_balance_threshold = event.threshold

    @on(HoldPlaced)
    def _hold_placed(self, event: HoldPlaced) -> None:
        hold = OpenHold(
            amount=event.amount,
            from_allowance=event.from_allowance,
            from_topup=event.from_topup,
            period=self.period,
            expires_at=event.expires_at,
            reason=event.reason,
            from_grants=tuple(event.from_grants.items()),
        )
        totals = self.held_totals
        if (replaced := self.holds.get(event.hold_id)) is not None:  # never placed so
            totals = totals.counting(event.hold_id, replaced, -1)
        self.holds = {**self.holds, event.hold_id: hold}
        self.held_totals = totals.counting(event.hold_id, hold, 1)
        self.topup_reserved += event.from_topup  # placed from free top-ups only
        if self.kept_parts and event.from_topup:
            self.kept_parts = placed_ahead(self.kept_parts, event.from_topup)

    @on(HoldCaptured)
    def _hold_captured(self, event: HoldCaptured) -> None:
        if event.debt_repaid:
            self._repaid_by_carried(event.hold_id, event.debt_repaid)
        self._settled_kept(event.hold_id, event.kept_spent, event.from_topup, event.kept_lapsed)
        self._forget_hold(event.hold_id)
        self.allowance_remaining -= event.from_allowance + event.lapsed
        self.topup_balance += event.debt_repaid - event.from_topup
        if event.from_grants or event.grants_lapsed:
            self._take_from_grants(event.from_grants, event.grants_lapsed)
        self._rebacked(event.from_topup, event.kept_spent + event.kept_lapsed)

    @on(HoldReleased, HoldExpired)
    def _hold_released(self, event: HoldReleased | HoldExpired) -> None:
        if event.debt_repaid:
            self._repaid_by_carried(event.hold_id, event.debt_repaid)
        self._settled_kept(event.hold_id, 0, 0, event.kept_lapsed)
        self._forget_hold(event.hold_id)
        self.allowance_remaining -= event.lapsed
        self.topup_balance += event.debt_repaid
        if event.grants_lapsed:
            self._take_from_grants(event.grants_lapsed)
        self._rebacked(0, event.kept_lapsed)

    def _settled_kept(self, hold_id: str, spent: int, taken: int, lapsed: int) -> None:
        # Before the hold is forgotten: its top-ups leave the held ones.
        if self.kept_parts and (hold := self.holds.get(hold_id)) is not None:
            self.kept_parts = settled_kept(
                self.kept_parts,
                self.held_topup,
                spent=spent,
                taken=taken,
                lapsed=lapsed,
                left=max(hold.from_topup - spent - taken - lapsed, 0),
            )

    def _repaid_by_carried(self, hold_id: str, debt_repaid: int) -> None:
        # Never below none: a settlement recorded by an earlier rule may have repaid more (the
        # audit reports it), or of a hold not open.
        if (hold := self.holds.get(hold_id)) is not None:
            self.carried_repayable = repaid_by(self.carried_repayable, hold.period, debt_repaid)

    def _rebacked(self, from_topup: int, kept_ended: int) -> None:
        """After a settlement: top-ups back no more than the holds left reserve, and what
        was kept for holds and is spent or lapses leaves the allowance."""
        self.allowance_remaining -= kept_ended
        self.kept_for_holds -= kept_ended
        # Top-ups back only held top-ups nothing was kept for (an earlier rule lapsed what was
        # kept first, so that this held; now a settlement may leave more kept than backed).
        unkept = max(self.held_topup - self.kept_for_holds, 0)
        self.topup_reserved = min(max(self.topup_reserved - from_topup, 0), unkept)

    def _forget_hold(self, hold_id: str) -> None:
        hold = self.holds.get(hold_id)
        if hold is None:
            return  # not open: the audit says so of a settlement recorded of it
        holds = dict(self.holds)
        del holds[hold_id]
        self.holds = holds
        self.held_totals = self.held_totals.counting(hold_id, hold, -1)

    @on(CreditsGranted)
    def _granted(self, event: CreditsGranted) -> None:
        expires_at = None if event.expires_at is None else datetime.fromisoformat(event.expires_at)
        if expires_at is not None and not offset_in_whole_minutes(expires_at):
            # Granted before such offsets were refused: kept in UTC, which snapshots write
            # as the same instant (they would drop the offset's seconds).
            expires_at = expires_at.astimezone(UTC)
        grant = Grant(
            amount=event.amount,
            remaining=event.amount,
            priority=event.priority,
            expires_at=expires_at,
            order=event.originator_version,
            reason=event.reason,
        )
        self.grants = in_burn_order({**self.grants, event.grant_id: grant})
        self.granted += event.amount

    @on(GrantExpired, GrantVoided)
    def _grant_closed(self, event: GrantExpired | GrantVoided) -> None:
        status = EXPIRED if isinstance(event, GrantExpired) else VOIDED
        grants = dict(self.grants)
        grants[event.grant_id] = msgspec.structs.replace(grants[event.grant_id], status=status)
        self.grants = grants
        # What remains lapses now; what holds reserve lapses when they settle.
        self._take_from_grants({event.grant_id: event.lapsed})

    def _take_from_grants(self, *amounts: dict[str, int]) -> None:
        """Lower grants' remaining; a closed grant with nothing left is forgotten."""
        grants = dict(self.grants)
        for taken in amounts:
            for grant_id, credits in taken.items():
                grant = grants[grant_id]
                grants[grant_id] = msgspec.structs.replace(
                    grant, remaining=grant.remaining - credits
                )
                self.granted -= credits
        closed = frozenset(
            grant_id
            for taken in amounts
            for grant_id in taken
            if grant_id in grants
            and grants[grant_id].status != ACTIVE
            and grants[grant_id].remaining == 0
        )
        for grant_id in closed:
            del grants[grant_id]
        self.grants = grants
        if closed:
            self.closed_grants = self.closed_grants | closed

    # --- snapshots -----------------------------------------------------------------------

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        # Snapshots taken before holds (and then thresholds) existed lack them.
        state.setdefault("holds", {})
        state.setdefault("low_balance_threshold", None)

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        state.setdefault("grants", {})
        state.setdefault("granted", sum(g["remaining"] for g in state["grants"].values()))
        state.setdefault("closed_grants", [])

    @staticmethod
    def upcast_v3_v4(state: dict[str, Any]) -> None:
        held_topup = sum(h["from_topup"] for h in state["holds"].values())
        state.setdefault("topup_reserved", min(held_topup, max(state["topup_balance"], 0)))
        state.setdefault("kept_for_holds", 0)

    @staticmethod
    def upcast_v4_v5(state: dict[str, Any]) -> None:
        # Taken before a hold kept what its share may repay (no ``repayable``: 0), or while
        # it was set by a rule that let a later reset's repayment be repaid again: either
        # way not what the events give, which only they can tell. Such a hold repays none,
        # as settlements did before shares repaid debts (less than the rule allows; the
        # audit does not hold these snapshots to the replay's figure, audit/snapshots.py).
        for hold in state["holds"].values():
            hold["repayable"] = 0

    @staticmethod
    def upcast_v5_v6(state: dict[str, Any]) -> None:
        # Each open hold kept what its own share may repay, in the order placed, and a later
        # reset's share could be given an earlier one's part too (docs/holds.md): the shares
        # together may repay what only the events tell. None, as ``upcast_v4_v5`` gives
        # (less than the rule allows, never more).
        for hold in state["holds"].values():
            hold.pop("repayable", None)
        state["carried_repayable"] = 0

    @staticmethod
    def upcast_v6_v7(state: dict[str, Any]) -> None:
        # One figure any carried share may repay, set by a rule since changed: kept beyond
        # what later resets left owed, and earlier shares could repay a later reset's part
        # (docs/holds.md). What is left, and whose, only the events tell: none, as
        # ``upcast_v4_v5`` gives (less than the rule allows, never more).
        state["carried_repayable"] = ()

    @staticmethod
    def upcast_v7_v8(state: dict[str, Any]) -> None:
        # Which held top-ups what resets kept stands for was not kept: only the events tell.
        # The last of them, which captures take last: its holds spend no more of it than the
        # replay's would (less than the rule allows, never more; docs/holds.md).
        held_topup = sum(h["from_topup"] for h in state["holds"].values())
        kept = min(state["kept_for_holds"], held_topup)
        parts = [{"ahead": held_topup - kept, "amount": kept}] if kept > 0 else []
        state["kept_parts"] = parts

    @staticmethod
    def restore_state(state: dict[str, Any]) -> None:
        """A snapshot's JSON leaves holds and grants as plain objects, sets as lists; what
        the holds add up to is made from them (``DERIVED_STATE``)."""
        state["holds"] = {k: OpenHold.of(v) for k, v in state["holds"].items()}
        state["held_totals"] = HeldTotals.of(state["holds"])
        state["grants"] = in_burn_order({k: Grant.of(v) for k, v in state["grants"].items()})
        state["closed_grants"] = frozenset(state["closed_grants"])
        state["carried_repayable"] = tuple(
            msgspec.convert(part, type=RepayablePart) for part in state["carried_repayable"]
        )
        state["kept_parts"] = tuple(
            msgspec.convert(part, type=KeptPart) for part in state["kept_parts"]
        )
