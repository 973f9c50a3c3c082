"""How each account event moves the three buckets: allowance, grants and top-ups.

Shared by the balances view, the statement and the auditor's replay, so the
three cannot disagree about what an event means.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

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
    MonthlyAllowanceReset,
)
from projections.events import ByEventClass, as_text
from projections.moves import moved_by


class _Buckets(Protocol):
    @property
    def allowance_remaining(self) -> int: ...
    @property
    def granted(self) -> int: ...
    @property
    def topup_balance(self) -> int: ...
    @property
    def held(self) -> int: ...


class Balances:
    """``balance`` and ``available`` of a view's account with the buckets as fields
    (``allowance_remaining``, ``granted``, ``topup_balance``, ``held``): the balance read's
    row (``projections.balance_reads.BalanceRow``) and the alerts' state
    (``projections.notifications.NotifierState``) mix it in. As ``CreditAccount``'s."""

    __slots__ = ()

    @property
    def balance(self: _Buckets) -> int:
        """Credits the account holds, including those reserved by open holds."""
        return self.allowance_remaining + self.granted + self.topup_balance

    @property
    def available(self: _Buckets) -> int:
        """Credits that can be spent or held now: the balance less what holds reserve."""
        # Written out: a read asks it of every row it answers with.
        return self.allowance_remaining + self.granted + self.topup_balance - self.held


class Buckets(msgspec.Struct, frozen=True):
    """An account's spendable credits, by bucket."""

    allowance: int
    topup: int
    granted: int = 0

    @property
    def balance(self) -> int:
        return self.allowance + self.granted + self.topup


class Change(msgspec.Struct, frozen=True):
    """What one event did to the buckets, and how a statement describes it."""

    allowance: int
    topup: int
    description: str
    granted: int = 0

    @property
    def amount(self) -> int:
        return self.allowance + self.granted + self.topup


def change_of(event: object, before: Buckets) -> Change | None:
    """The change an account event makes; None for events that move no credits.

    Every event of ``STATEMENT_EVENTS`` makes one (a hold moves no credit but
    is a line of the statement); no other event does.
    """
    moved = moved_by(event, before.allowance)
    if moved is None:
        return None
    allowance, topup, granted = moved
    return Change(allowance, topup, description_of(event), granted)


SPENT = "Spent"
"""A spend's description when it has no reason of its own (``DESCRIPTIONS``)."""


def description_of(event: object) -> str:
    """How the statement describes an event that moves credits (one of ``STATEMENT_EVENTS``)."""
    return as_text(DESCRIPTIONS[type(event)](event))


def _reset_described(event: MonthlyAllowanceReset) -> str:
    carried = event.held_allowance_carried
    described = f"Monthly allowance reset for {event.period}"
    if carried:
        described += f" ({carried} held by open holds carried over)"
    if event.debt_repaid:
        described += f"; {event.debt_repaid} of the allowance that lapsed repaid the top-up debt"
    if event.held_topup_kept:
        described += (
            f"; {event.held_topup_kept} of the allowance that lapsed kept for held top-ups "
            "that were taken back"
        )
    return described


def _captured_described(event: HoldCaptured) -> str:
    described = f"Hold captured: {event.captured} spent ({event.hold_id})"
    lapsed = event.lapsed + event.kept_lapsed
    return described + _lapsed(lapsed, sum(event.grants_lapsed.values()), event.debt_repaid)


def _ended_hold_described(event: HoldReleased | HoldExpired) -> str:
    grants_lapsed = sum(event.grants_lapsed.values())
    verb = "released" if isinstance(event, HoldReleased) else "expired"
    back = event.released - event.lapsed - grants_lapsed
    described = f"Hold {verb}: {back} credits back ({event.hold_id})"
    return described + _lapsed(event.lapsed + event.kept_lapsed, grants_lapsed, event.debt_repaid)


def _granted_described(event: CreditsGranted) -> str:
    expiry = f", expires {event.expires_at}" if event.expires_at else ""
    reason = f": {event.reason}" if event.reason else ""
    return f"Granted {event.amount} ({event.grant_id}{expiry}){reason}"


def _ended_grant_described(event: GrantExpired | GrantVoided) -> str:
    verb = "expired" if isinstance(event, GrantExpired) else "voided"
    return f"Grant {verb}: {event.lapsed} lapsed ({event.grant_id})"


DESCRIPTIONS = ByEventClass(
    {
        AccountOpened: lambda opened: (
            f"Account opened, monthly allowance {opened.monthly_allowance}"
        ),
        CreditsSpent: lambda spent: spent.reason or SPENT,
        MonthlyAllowanceReset: _reset_described,
        CreditsPurchased: lambda purchased: f"Top-up purchased ({purchased.session_id})",
        CreditsClawedBack: lambda clawed_back: f"Refunded top-up ({clawed_back.session_id})",
        CreditsReversed: lambda reversed_: f"Disputed top-up ({reversed_.session_id})",
        CreditsRestored: lambda restored: (
            f"Refund failed ({restored.session_id})"
            if restored.refund_id
            else f"Dispute won ({restored.session_id})"
        ),
        HoldPlaced: lambda placed: f"{placed.amount} credits held ({placed.hold_id})",
        HoldCaptured: _captured_described,
        HoldReleased: _ended_hold_described,
        HoldExpired: _ended_hold_described,
        CreditsGranted: _granted_described,
        GrantExpired: _ended_grant_described,
        GrantVoided: _ended_grant_described,
    }
)
"""How a statement describes each event that moves credits (the classes of ``MOVES``)."""


def _lapsed(allowance: int, grants: int, debt_repaid: int = 0) -> str:
    said = ""
    if allowance:
        said += f", {allowance} of last period's allowance lapsed"
    if debt_repaid:
        said += f" ({debt_repaid} of it repaid the top-up debt)"
    if grants:
        said += f", {grants} of ended grants lapsed"
    return said


HELD = ByEventClass(
    {
        HoldPlaced: lambda placed: placed.amount,
        HoldCaptured: lambda captured: -captured.captured - captured.released,
        HoldReleased: lambda released: -released.released,
        HoldExpired: lambda expired: -expired.released,
    }
)
"""What each hold event does to the held credits (by class, as ``MOVES``)."""
HELD_EXACT = HELD.exact
"""``HELD``'s classes decided so far, in a plain dict (``ByEventClass.exact``): the views
that keep balances look up every event here first."""


def apply_change(before: Buckets, change: Change) -> Buckets:
    """The buckets after a change."""
    return Buckets(
        before.allowance + change.allowance,
        before.topup + change.topup,
        before.granted + change.granted,
    )
