"""Bugs planted on purpose, to prove that the simulator finds them (``SIM_PLANT=<name>``).

Each replaces one rule of the ledger with a subtly wrong one, in this process only:
the simulator, run with it, must report a violation. Never used outside tests.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ledger.domain import adjustments, checkout
from ledger.domain.account import CreditAccount
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


def _rounding_off_by_one(put: Setter) -> None:
    """Refunded credits rounded up instead of down."""

    def taken_back(credits: int, amount: int, amount_refunded: int, disputes: Any) -> Any:
        worth = original(credits, amount, amount_refunded, disputes)
        refunded = -(-credits * min(amount, amount_refunded) // amount) if amount else 0
        return adjustments.Worth(refunded, min(worth.disputed, credits - refunded))

    original = adjustments.taken_back
    put(checkout, "taken_back", taken_back)


def _projector_memory_never_forgets(put: Setter) -> None:
    """The live projector keeps the rows it remembers after another projector wrote them."""
    put(ViewMemory, "forget", lambda self: None)


PLANTS: dict[str, Callable[[Setter], None]] = {
    "spend-ignores-holds": _spend_ignores_holds,
    "refund-applied-twice": _refund_applied_twice,
    "rounding-off-by-one": _rounding_off_by_one,
    "projector-memory-never-forgets": _projector_memory_never_forgets,
}


def plant(name: str | None, put: Setter = setattr) -> None:
    """Plant the named bug in this process (None: none); ``put`` sets the attribute."""
    if name:
        PLANTS[name](put)
