"""Bugs planted on purpose, to prove that the simulator finds them (``SIM_PLANT=<name>``).

Each replaces one rule of the ledger with a subtly wrong one, in this process only:
the simulator, run with it, must report a violation. Never used outside tests.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from api.routes import holds
from ledger.domain import account, adjustments, checkout
from ledger.domain.account import CreditAccount
from ledger.domain.events import MonthlyAllowanceReset
from ledger.service import Ledger
from projections.memory import ViewMemory

Setter = Callable[[Any, str, Any], None]


def _spend_ignores_holds(put: Setter) -> None:
    """Spends and holds see the whole balance, as if nothing were held."""

    def available_at(self: CreditAccount, moment: datetime | None) -> int:
        return int(self.balance)

    put(CreditAccount, "available_at", available_at)


def _refund_applied_twice(put: Setter) -> None:
    """A refund's clawback forgets what earlier refunds took back."""
    original = checkout.CheckoutSession.refund

    def refund(self: Any, amount_refunded: int) -> Any:
        already = self.credits_clawed_back
        self.credits_clawed_back = 0
        try:
            return original(self, amount_refunded)
        finally:
            self.credits_clawed_back += already

    put(checkout.CheckoutSession, "refund", refund)


def _refund_failures_ignored(put: Setter) -> None:
    """A refund that fails gives nothing back: its failure is old news (as before 07c901b)."""
    original = checkout.CheckoutSession.update_refund

    def update_refund(self: Any, refund_id: str, amount: int, status: str) -> Any:
        if status in adjustments.RETURNED_NOTHING:
            return checkout.Adjustment()
        return original(self, refund_id, amount, status)

    put(checkout.CheckoutSession, "update_refund", update_refund)


def _refunds_by_id_ignored(put: Setter) -> None:
    """The money refunded is the largest amount_refunded less the failed refunds, never what
    the live refunds known by id are of: a refund whose refund.created comes before its
    charge.refunded takes nothing yet, one made after another failed is taken back short."""

    def refunded_money(amount_refunded: int, refunds: dict[str, Any]) -> int:
        failed = sum(r.amount for r in refunds.values() if not r.returned)
        return max(amount_refunded - failed, 0)

    put(checkout, "refunded_money", refunded_money)


def _rounding_off_by_one(put: Setter) -> None:
    """Refunded credits rounded up instead of down."""

    def taken_back(credits: int, amount: int, amount_refunded: int, disputes: Any) -> Any:
        worth = original(credits, amount, amount_refunded, disputes)
        refunded = -(-credits * min(amount, amount_refunded) // amount) if amount else 0
        return adjustments.Worth(refunded, min(worth.disputed, credits - refunded))

    original = adjustments.taken_back
    put(checkout, "taken_back", taken_back)


def _reset_clears_top_ups(put: Setter) -> None:
    """A monthly reset takes the purchased top-ups with the allowance."""
    original = CreditAccount.evolve

    def evolve(self: CreditAccount, event: Any) -> None:
        original(self, event)
        if type(event) is MonthlyAllowanceReset:
            self.topup_balance = min(self.topup_balance, 0)

    put(CreditAccount, "evolve", evolve)


def _settlement_ignores_closed_grants(put: Setter) -> None:
    """A hold settled after its grant expired or was voided gives the grant's share back to
    the grant instead of letting what the capture does not use lapse."""
    original = account.settle

    def settle(hold: Any, captured: int, *, carried: bool, closed_grants: Any = None) -> Any:
        return original(hold, captured, carried=carried)

    put(account, "settle", settle)


def _reset_carries_a_hold_once(put: Setter) -> None:
    """A reset carries over only what holds placed in the period it ends reserve of the
    allowance: a hold still open at a second reset loses its share (carried once, as if
    resets were a month apart and holds lived days). Only resets ahead of the calendar and
    long holds (``PLANT_MIX``) reach it."""
    original = CreditAccount.reset_figures

    def reset_figures(self: CreditAccount) -> tuple[int, int, int]:
        carried, debt_repaid, kept = original(self)
        older = sum(h.from_allowance for h in self.holds.values() if h.period != self.period)
        return carried - older, debt_repaid, kept

    put(CreditAccount, "reset_figures", reset_figures)


def _projector_memory_never_forgets(put: Setter) -> None:
    """The live projector keeps the rows it remembers after another projector wrote them."""
    put(ViewMemory, "forget", lambda self: None)


def _session_of_a_refused_purchase_left_open(put: Setter) -> None:
    """A purchase that lost the race to record its key leaves its Stripe session payable
    (as before the fix). Only reused purchase keys sent at once (``PLANT_MIX``) reach it."""

    async def leave_it(self: Ledger, created: Any, why: str) -> None:
        return None

    put(Ledger, "_expire_unanswered", leave_it)


def _capture_over_the_hold_takes_the_hold(put: Setter) -> None:
    """A capture of more than the hold reserves takes all it reserves, as if asked that.
    Only captures of too much (``PLANT_MIX``) reach it."""
    original = CreditAccount.capture_hold

    def capture_hold(self: CreditAccount, hold_id: str, amount: int, now: datetime) -> Any:
        return original(self, hold_id, min(amount, self.hold(hold_id).amount), now)

    put(CreditAccount, "capture_hold", capture_hold)


def _default_hold_of_an_hour(put: Setter) -> None:
    """A hold whose request names no expiry lives an hour, not the README's 900 s. Only
    holds placed with the default (``PLANT_MIX``) reach it."""
    put(holds, "DEFAULT_HOLD_SECONDS", 3600)


PLANTS: dict[str, Callable[[Setter], None]] = {
    "spend-ignores-holds": _spend_ignores_holds,
    "refund-applied-twice": _refund_applied_twice,
    "refund-failures-ignored": _refund_failures_ignored,
    "refunds-by-id-ignored": _refunds_by_id_ignored,
    "rounding-off-by-one": _rounding_off_by_one,
    "reset-clears-top-ups": _reset_clears_top_ups,
    "settlement-ignores-closed-grants": _settlement_ignores_closed_grants,
    "projector-memory-never-forgets": _projector_memory_never_forgets,
    "reset-carries-a-hold-once": _reset_carries_a_hold_once,
    "session-of-a-refused-purchase-left-open": _session_of_a_refused_purchase_left_open,
    "capture-over-the-hold-takes-the-hold": _capture_over_the_hold_takes_the_hold,
    "default-hold-of-an-hour": _default_hold_of_an_hour,
}

PLANT_MIX = {
    "reset-carries-a-hold-once": "long-hold=8,reset-ahead=8,settle-hold=3",
    "session-of-a-refused-purchase-left-open": "reused-purchase-key=8",
    "capture-over-the-hold-takes-the-hold": "capture-too-much=8",
    "default-hold-of-an-hour": "default-hold=8",
}
"""The ``SIM_MIX`` a plant needs: steps the default schedule never takes reach it."""


def plant(name: str | None, put: Setter = setattr) -> None:
    """Plant the named bug in this process (None: none); ``put`` sets the attribute."""
    if name:
        PLANTS[name](put)
