"""Grants: credits an internal service gives an account, with a priority and maybe an expiry.

Money is not involved: a grant is not a purchase, and refunds, disputes and
monthly resets never touch it. Spends and holds burn, in this order: the monthly
allowance, then grants (lowest ``priority`` first, then the soonest expiry, no
expiry last, then the oldest), then purchased top-ups. At its expiry (or when it
is voided) what remains of a grant lapses, except what open holds reserve of it:
that stays reserved until the hold settles, and what the capture does not use
then lapses too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

ACTIVE = "active"
EXPIRED = "expired"
VOIDED = "voided"

_NEVER = "9999-12-31T23:59:59+00:00"


class Grant(msgspec.Struct, frozen=True):
    """One grant as the account keeps it; ``order`` is the version that granted it."""

    amount: int
    remaining: int
    priority: int
    expires_at: str | None
    order: int
    reason: str = ""
    status: str = ACTIVE

    @classmethod
    def of(cls, state: Grant | dict[str, Any]) -> Grant:
        """The grant itself, or the grant a snapshot's JSON describes."""
        return state if isinstance(state, Grant) else msgspec.convert(state, type=cls)

    def usable_at(self, moment: datetime | None) -> bool:
        """Whether spends and holds decided at ``moment`` may take from it."""
        if self.status != ACTIVE:
            return False
        if moment is None or self.expires_at is None:
            return True
        return moment < datetime.fromisoformat(self.expires_at)

    def has_expired(self, moment: datetime) -> bool:
        return self.expires_at is not None and moment >= datetime.fromisoformat(self.expires_at)


def burn_order(grants: dict[str, Grant]) -> list[str]:
    """Grant ids in the order spends take from them."""
    return sorted(
        grants,
        key=lambda grant_id: (
            grants[grant_id].priority,
            datetime.fromisoformat(grants[grant_id].expires_at or _NEVER),
            grants[grant_id].order,
        ),
    )
