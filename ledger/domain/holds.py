"""Holds: credits reserved for work in progress, captured or released later.

A hold keeps its credits inside the account's buckets (``balance`` still
counts them) but takes them out of what can be spent or held again
(``available``). It takes from the same buckets as a spend, in the same
order: free allowance first, then grants, then top-ups.

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
    from_grants: tuple[tuple[str, int], ...] = ()
    """What it reserves of each grant, in burn order."""

    @classmethod
    def of(cls, state: OpenHold | dict[str, Any]) -> OpenHold:
        """The hold itself, or the hold a snapshot's JSON describes."""
        return state if isinstance(state, OpenHold) else msgspec.convert(state, type=cls)

    def has_expired(self, now: datetime) -> bool:
        return now >= datetime.fromisoformat(self.expires_at)


class Settlement(msgspec.Struct, frozen=True):
    """How a hold's credits part when it is captured, released or expires.

    ``captured`` is spent (``from_allowance`` + ``from_grants`` + ``from_topup``);
    ``released`` goes back to the account, except ``lapsed``, the uncaptured part
    of an allowance share carried over a reset, which ends with its period, and
    ``grants_lapsed``, the uncaptured shares of grants that expired or were voided
    meanwhile.
    """

    captured: int
    from_allowance: int
    from_topup: int
    released: int
    lapsed: int
    from_grants: dict[str, int] = {}
    grants_lapsed: dict[str, int] = {}


def settle(
    hold: OpenHold, captured: int, *, carried: bool, closed_grants: frozenset[str] = frozenset()
) -> Settlement:
    """Split a hold's credits between what is spent and what goes back.

    A capture spends the hold's allowance share first, then its grant shares in
    burn order, then its top-up share.
    """
    from_allowance = min(captured, hold.from_allowance)
    rest = captured - from_allowance
    from_grants: dict[str, int] = {}
    grants_lapsed: dict[str, int] = {}
    for grant_id, share in hold.from_grants:
        taken = min(rest, share)
        rest -= taken
        if taken:
            from_grants[grant_id] = taken
        if grant_id in closed_grants and share > taken:
            grants_lapsed[grant_id] = share - taken
    unspent_allowance = hold.from_allowance - from_allowance
    return Settlement(
        captured=captured,
        from_allowance=from_allowance,
        from_topup=rest,
        released=hold.amount - captured,
        lapsed=unspent_allowance if carried else 0,
        from_grants=from_grants,
        grants_lapsed=grants_lapsed,
    )
