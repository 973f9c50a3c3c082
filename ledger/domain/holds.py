"""Holds: credits reserved for work in progress, captured or released later.

A hold keeps its credits inside the account's buckets (``balance`` still
counts them) but takes them out of what can be spent or held again
(``available``). It takes from the same buckets as a spend, in the same
order: free allowance first, then top-ups.

Across a monthly reset an open hold keeps its reservation whole. Its
allowance share belongs to the period it was placed in: the reset carries
that share over (``held_allowance_carried`` on the reset event) instead of
letting it lapse with the rest of the old allowance, so a capture after the
reset still finds its credits and the new period starts with its full plan
amount free. Whatever of a carried share is not captured lapses when the
hold settles, as the old period's allowance would have at the reset.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class OpenHold(msgspec.Struct, frozen=True):
    """One open hold, as the account keeps it."""

    amount: int
    from_allowance: int
    from_topup: int
    period: str
    expires_at: str
    reason: str = ""

    @classmethod
    def of(cls, state: OpenHold | dict[str, Any]) -> OpenHold:
        """The hold itself, or the hold a snapshot's JSON describes."""
        return state if isinstance(state, OpenHold) else msgspec.convert(state, type=cls)

    def has_expired(self, now: datetime) -> bool:
        return now >= datetime.fromisoformat(self.expires_at)


class Settlement(msgspec.Struct, frozen=True):
    """How a hold's credits part when it is captured, released or expires.

    ``captured`` is spent (``from_allowance`` + ``from_topup``); ``released``
    goes back to the account, except ``lapsed``: the uncaptured part of an
    allowance share carried over a reset, which ends with its period.
    """

    captured: int
    from_allowance: int
    from_topup: int
    released: int
    lapsed: int


def settle(hold: OpenHold, captured: int, *, carried: bool) -> Settlement:
    """Split a hold's credits between what is spent and what goes back."""
    from_allowance = min(captured, hold.from_allowance)
    unspent_allowance = hold.from_allowance - from_allowance
    return Settlement(
        captured=captured,
        from_allowance=from_allowance,
        from_topup=captured - from_allowance,
        released=hold.amount - captured,
        lapsed=unspent_allowance if carried else 0,
    )
