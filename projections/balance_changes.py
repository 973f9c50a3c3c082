"""How each account event moves the two buckets: allowance and top-ups.

Shared by the balances view, the statement and the auditor's replay, so the
three cannot disagree about what an event means.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Buckets(msgspec.Struct, frozen=True):
    """An account's spendable credits, by bucket."""

    allowance: int
    topup: int

    @property
    def balance(self) -> int:
        return self.allowance + self.topup


class Change(msgspec.Struct, frozen=True):
    """What one event did to the buckets, and how a statement describes it."""

    allowance: int
    topup: int
    description: str

    @property
    def amount(self) -> int:
        return self.allowance + self.topup


def change_of(event_type: str, data: dict[str, Any], before: Buckets) -> Change | None:
    """The change an account event makes; None for events that move no credits."""
    match event_type:
        case "AccountOpened":
            allowance = int(data["monthly_allowance"])
            return Change(allowance, 0, f"Account opened, monthly allowance {allowance}")
        case "CreditsSpent":
            reason = str(data.get("reason") or "Spent")
            return Change(-int(data["from_allowance"]), -int(data["from_topup"]), reason)
        case "MonthlyAllowanceReset":
            allowance = int(data["monthly_allowance"])
            carried = int(data.get("held_allowance_carried") or 0)
            described = f"Monthly allowance reset for {data['period']}"
            if carried:
                described += f" ({carried} held by open holds carried over)"
            return Change(allowance + carried - before.allowance, 0, described)
        case "CreditsPurchased":
            return Change(0, int(data["credits"]), f"Top-up purchased ({data['session_id']})")
        case "CreditsClawedBack":
            return Change(0, -int(data["credits"]), f"Refunded top-up ({data['session_id']})")
        case "CreditsReversed":
            return Change(0, -int(data["credits"]), f"Disputed top-up ({data['session_id']})")
        case "CreditsRestored":
            return Change(0, int(data["credits"]), f"Dispute won ({data['session_id']})")
        case "HoldPlaced":
            return Change(0, 0, f"{data['amount']} credits held ({data['hold_id']})")
        case "HoldCaptured":
            lapsed = int(data["lapsed"])
            described = f"Hold captured: {data['captured']} spent ({data['hold_id']})"
            if lapsed:
                described += f", {lapsed} of last period's allowance lapsed"
            return Change(
                -int(data["from_allowance"]) - lapsed, -int(data["from_topup"]), described
            )
        case "HoldReleased" | "HoldExpired":
            lapsed = int(data["lapsed"])
            verb = "released" if event_type == "HoldReleased" else "expired"
            back = int(data["released"]) - lapsed
            described = f"Hold {verb}: {back} credits back ({data['hold_id']})"
            if lapsed:
                described += f", {lapsed} of last period's allowance lapsed"
            return Change(-lapsed, 0, described)
    return None


def held_change(event_type: str, data: dict[str, Any]) -> int:
    """How an account event moves the credits reserved by open holds."""
    match event_type:
        case "HoldPlaced":
            return int(data["amount"])
        case "HoldCaptured":
            return -int(data["captured"]) - int(data["released"])
        case "HoldReleased" | "HoldExpired":
            return -int(data["released"])
    return 0


def apply_change(before: Buckets, change: Change) -> Buckets:
    """The buckets after a change."""
    return Buckets(before.allowance + change.allowance, before.topup + change.topup)
