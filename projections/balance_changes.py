"""How each account event moves the three buckets: allowance, grants and top-ups.

Shared by the balances view, the statement and the auditor's replay, so the
three cannot disagree about what an event means.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
    match event:
        case AccountOpened(monthly_allowance=allowance):
            return Change(allowance, 0, f"Account opened, monthly allowance {allowance}")
        case CreditsSpent():
            return Change(
                -event.from_allowance,
                -event.from_topup,
                event.reason or "Spent",
                -sum(event.from_grants.values()),
            )
        case MonthlyAllowanceReset(held_allowance_carried=carried):
            described = f"Monthly allowance reset for {event.period}"
            if carried:
                described += f" ({carried} held by open holds carried over)"
            return Change(event.monthly_allowance + carried - before.allowance, 0, described)
        case CreditsPurchased():
            return Change(0, event.credits, f"Top-up purchased ({event.session_id})")
        case CreditsClawedBack():
            return Change(0, -event.credits, f"Refunded top-up ({event.session_id})")
        case CreditsReversed():
            return Change(0, -event.credits, f"Disputed top-up ({event.session_id})")
        case CreditsRestored():
            return Change(0, event.credits, f"Dispute won ({event.session_id})")
        case HoldPlaced():
            return Change(0, 0, f"{event.amount} credits held ({event.hold_id})")
        case HoldCaptured(lapsed=lapsed):
            grants_lapsed = sum(event.grants_lapsed.values())
            described = f"Hold captured: {event.captured} spent ({event.hold_id})"
            described += _lapsed(lapsed, grants_lapsed)
            return Change(
                -event.from_allowance - lapsed,
                -event.from_topup,
                described,
                -sum(event.from_grants.values()) - grants_lapsed,
            )
        case HoldReleased(lapsed=lapsed) | HoldExpired(lapsed=lapsed):
            grants_lapsed = sum(event.grants_lapsed.values())
            verb = "released" if isinstance(event, HoldReleased) else "expired"
            back = event.released - lapsed - grants_lapsed
            described = f"Hold {verb}: {back} credits back ({event.hold_id})"
            described += _lapsed(lapsed, grants_lapsed)
            return Change(-lapsed, 0, described, -grants_lapsed)
        case CreditsGranted():
            expiry = f", expires {event.expires_at}" if event.expires_at else ""
            reason = f": {event.reason}" if event.reason else ""
            return Change(
                0, 0, f"Granted {event.amount} ({event.grant_id}{expiry}){reason}", event.amount
            )
        case GrantExpired() | GrantVoided():
            verb = "expired" if isinstance(event, GrantExpired) else "voided"
            return Change(
                0, 0, f"Grant {verb}: {event.lapsed} lapsed ({event.grant_id})", -event.lapsed
            )
    return None


def _lapsed(allowance: int, grants: int) -> str:
    said = ""
    if allowance:
        said += f", {allowance} of last period's allowance lapsed"
    if grants:
        said += f", {grants} of ended grants lapsed"
    return said


def held_change(event: object) -> int:
    """How an account event moves the credits reserved by open holds."""
    held = _HELD.get(type(event))
    return held(event) if held is not None else 0


_HELD: dict[type, Callable[[Any], int]] = {
    HoldPlaced: lambda placed: placed.amount,
    HoldCaptured: lambda captured: -captured.captured - captured.released,
    HoldReleased: lambda released: -released.released,
    HoldExpired: lambda expired: -expired.released,
}
"""What each hold event does to the held credits (a dict: most events are not holds')."""


def apply_change(before: Buckets, change: Change) -> Buckets:
    """The buckets after a change."""
    return Buckets(
        before.allowance + change.allowance,
        before.topup + change.topup,
        before.granted + change.granted,
    )
