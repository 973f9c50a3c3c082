"""What each account event adds to the three buckets (allowance, top-up, granted), by class.

Apart from ``projections.balance_changes`` (which re-exports ``moved_by``) so that
``projections.events`` can work it out once an event, as it decodes it, for every view
that keeps balances (``ProjectedEvent.moved``).
"""

from __future__ import annotations

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
from projections.by_class import ByEventClass

Moved = tuple[int, int, int]
"""What an event adds to each bucket: (allowance, top-up, granted)."""


def moved_by(event: object, allowance_before: int) -> Moved | None:
    """``change_of``'s amounts without its description (the views that keep balances need
    only these, for every event); None for events that move no credits.

    ``allowance_before`` is the allowance left before the event: a reset sets a new one.
    """
    move = MOVES[type(event)]
    return None if move is None else move(event, allowance_before)


def _spent(event: CreditsSpent, _: int) -> Moved:
    # Most spends take from no grant: no sum() of an empty dict's values for them.
    grants = event.from_grants
    return (-event.from_allowance, -event.from_topup, -sum(grants.values()) if grants else 0)


def _reset(event: MonthlyAllowanceReset, allowance_before: int) -> Moved:
    allowance = event.monthly_allowance + event.held_allowance_carried + event.held_topup_kept
    return (allowance - allowance_before, event.debt_repaid, 0)


def _captured(event: HoldCaptured, _: int) -> Moved:
    return (
        -event.from_allowance - event.lapsed - event.kept_spent - event.kept_lapsed,
        event.debt_repaid - event.from_topup,
        -sum(event.from_grants.values()) - sum(event.grants_lapsed.values()),
    )


def _ended_hold(event: HoldReleased | HoldExpired, _: int) -> Moved:
    return (
        -event.lapsed - event.kept_lapsed,
        event.debt_repaid,
        -sum(event.grants_lapsed.values()),
    )


MOVES = ByEventClass(
    {
        AccountOpened: lambda opened, _: (opened.monthly_allowance, 0, 0),
        CreditsSpent: _spent,
        MonthlyAllowanceReset: _reset,
        CreditsPurchased: lambda purchased, _: (0, purchased.credits, 0),
        CreditsClawedBack: lambda clawed_back, _: (0, -clawed_back.credits, 0),
        CreditsReversed: lambda reversed_, _: (0, -reversed_.credits, 0),
        CreditsRestored: lambda restored, _: (0, restored.credits, 0),
        HoldPlaced: lambda *_: (0, 0, 0),
        HoldCaptured: _captured,
        HoldReleased: _ended_hold,
        HoldExpired: _ended_hold,
        CreditsGranted: lambda granted, _: (0, 0, granted.amount),
        GrantExpired: lambda ended, _: (0, 0, -ended.lapsed),
        GrantVoided: lambda ended, _: (0, 0, -ended.lapsed),
    }
)
"""A dict, not a ``match``: every view that keeps balances asks about every event."""
