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

from datetime import UTC, datetime
from typing import Any

import msgspec

ACTIVE = "active"
EXPIRED = "expired"
VOIDED = "voided"

_NEVER = datetime.max.replace(tzinfo=UTC)


class Grant(msgspec.Struct, frozen=True):
    """One grant as the account keeps it; ``order`` is the version that granted it."""

    amount: int
    remaining: int
    priority: int
    expires_at: datetime | None
    order: int
    reason: str = ""
    status: str = ACTIVE

    @classmethod
    def of(cls, state: Grant | dict[str, Any]) -> Grant:
        """The grant itself, or the grant a snapshot's JSON describes."""
        return state if isinstance(state, Grant) else msgspec.convert(state, type=cls)

    def usable_at(self, moment: datetime | None) -> bool:
        """Whether spends and holds decided at ``moment`` may take from it."""
        return self.status == ACTIVE and (moment is None or not self.has_expired(moment))

    def has_expired(self, moment: datetime) -> bool:
        """Whether its expiry has come at ``moment``: at ``expires_at`` it has."""
        return self.expires_at is not None and moment >= self.expires_at


def in_burn_order(grants: dict[str, Grant]) -> dict[str, Grant]:
    """The grants keyed in the order spends take from them.

    The account keeps its grants in this order (sorted when one is added), so a
    spend walks them from the first and stops as soon as it has enough.
    """
    return dict(
        sorted(
            grants.items(),
            key=lambda item: (item[1].priority, item[1].expires_at or _NEVER, item[1].order),
        )
    )
