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
hold settles, as the old period's allowance would have at the reset, and as
that would have, it repays a clawback's debt first (``repaying``): together,
the carried shares repay no more than the resets that carried them left owed
(``repayable_after_reset``, kept on the account in parts, each with the shares that may
repay it), so that a hold never makes credits.
"""

from __future__ import annotations

from bisect import bisect_left
from datetime import datetime
from types import MappingProxyType
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

    @property
    def due_at(self) -> datetime:
        """When it expires."""
        return datetime.fromisoformat(self.expires_at)

    def has_expired(self, now: datetime) -> bool:
        return now >= self.due_at


_NONE_RESERVED: MappingProxyType[str, int] = MappingProxyType({})


class HeldTotals(msgspec.Struct, frozen=True):
    """What an account's open holds add up to, and their expiries, soonest first.

    Kept as holds are placed and settled (``counting``), so that a decision asks what is
    held in O(1) and which holds are due in O(log n), rather than going through every hold.
    Replaced whole at every change, and cannot change in place (what it keeps per grant
    is a read-only view of a dict only it holds): the repository's copies share it.
    Snapshots do not keep it; a load makes it (``of``).
    """

    held: int = 0
    from_allowance: int = 0
    from_topup: int = 0
    of_grants: MappingProxyType[str, int] = _NONE_RESERVED
    """What open holds reserve of each grant (none: not there)."""
    expiries: tuple[tuple[datetime, str], ...] = ()
    """(expires_at, hold_id) of each open hold, in that order."""

    @classmethod
    def of(cls, holds: dict[str, OpenHold]) -> HeldTotals:
        """What these open holds add up to."""
        of_grants: dict[str, int] = {}
        for hold in holds.values():
            for grant_id, share in hold.from_grants:
                of_grants[grant_id] = of_grants.get(grant_id, 0) + share
        return cls(
            held=sum(hold.amount for hold in holds.values()),
            from_allowance=sum(hold.from_allowance for hold in holds.values()),
            from_topup=sum(hold.from_topup for hold in holds.values()),
            of_grants=MappingProxyType({g: held for g, held in of_grants.items() if held}),
            expiries=tuple(
                sorted((datetime.fromisoformat(h.expires_at), k) for k, h in holds.items())
            ),
        )

    def counting(self, hold_id: str, hold: OpenHold, sign: int) -> HeldTotals:
        """These totals with ``hold`` added (``sign`` 1) or taken away (-1)."""
        of_grants = self.of_grants
        if hold.from_grants:
            changed = dict(of_grants)
            for grant_id, share in hold.from_grants:
                if reserved := changed.get(grant_id, 0) + sign * share:
                    changed[grant_id] = reserved
                else:  # none reserved: not there (a share of 0 was never there)
                    changed.pop(grant_id, None)
            of_grants = MappingProxyType(changed)
        expiries = self.expiries
        key = (datetime.fromisoformat(hold.expires_at), hold_id)
        at = bisect_left(expiries, key)
        return HeldTotals(
            held=self.held + sign * hold.amount,
            from_allowance=self.from_allowance + sign * hold.from_allowance,
            from_topup=self.from_topup + sign * hold.from_topup,
            of_grants=of_grants,
            expiries=(
                (*expiries[:at], key, *expiries[at:])
                if sign > 0
                else expiries[:at] + expiries[at + 1 :]
            ),
        )

    def due(self, at: datetime) -> set[str] | None:
        """The holds whose expiry has come at ``at``; None if none has (most often)."""
        expiries = self.expiries
        if not expiries or expiries[0][0] > at:
            return None
        due = set()
        for expires_at, hold_id in expiries:
            if expires_at > at:
                break
            due.add(hold_id)
        return due


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
    kept_spent: int = 0
    """Of the top-ups captured, what a reset kept for them (spent from the allowance)."""
    kept_lapsed: int = 0
    """What a reset kept for holds that the holds left open no longer need: it lapses."""
    debt_repaid: int = 0
    """Of ``lapsed``, what goes to a negative top-up balance (``repaying``)."""


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


def backed(settlement: Settlement, *, reserved: int, kept: int, held_after: int) -> Settlement:
    """Where a settlement's top-ups come from, when a refund took top-ups that holds reserve.

    ``reserved`` of the account's held top-ups are backed by top-ups, ``kept`` by what
    resets kept of the allowance that lapsed (the refund's debt kept that much from use,
    see ``CreditAccount.reset_figures``), the rest by nothing. A capture spends backed
    top-ups first, then what was kept (from the allowance), then top-ups it leaves below
    what remains backed (a debt). Afterwards what was kept is no more than the top-ups the
    holds left open reserve beyond those backed; the rest of it lapses, as the allowance it
    came from would have.
    """
    from_topup = settlement.from_topup
    from_reserved = min(from_topup, reserved)
    kept_spent = min(from_topup - from_reserved, kept)
    reserved_after = min(reserved - from_reserved, held_after)
    kept_after = min(kept - kept_spent, max(held_after - reserved_after, 0))
    return msgspec.structs.replace(
        settlement,
        from_topup=from_topup - kept_spent,
        kept_spent=kept_spent,
        kept_lapsed=kept - kept_spent - kept_after,
    )


class RepayablePart(msgspec.Struct, frozen=True):
    """Of a debt a reset left owed, what the allowance shares it carried over may repay:
    those of holds placed in ``origin`` (the period it ended), and of holds placed since,
    carried by later resets. Shares placed before ``origin`` would have lapsed, at their
    own resets, before the debt was owed."""

    origin: str
    amount: int


def repayable_after_reset(
    parts: tuple[RepayablePart, ...],
    holds: dict[str, OpenHold],
    period: str,
    *,
    owed: int,
    repaid: int,
) -> tuple[RepayablePart, ...]:
    """What the allowance shares open holds carry may repay of a debt once a reset ended
    ``period``, found ``owed`` owed by the top-ups and repaid ``repaid`` of it from the
    allowance that lapsed; ``parts`` before it.

    Had the holds settled before the resets that carried them, what they left of their
    shares would have lapsed then and repaid the debt each reset left owed. The shares
    carried before would have repaid their parts at their own resets: this reset repays
    first what they could not, then their parts, the newest first, which they may then
    repay that much less of (else the debt is repaid twice, by the reset and by the
    shares). Together they may repay no more than it leaves owed: had they settled before,
    a purchase since that repaid their part would have been credits the reset lapsed none
    for, but only for what they would have lapsed, which a capture decides later; kept
    beyond what is owed, their part repaid a later debt that was never theirs, the more
    they were captured (credits made). The shares of holds placed in ``period`` may repay
    what it left owed beyond those parts, no more (a hold never makes credits), and the
    earlier parts too (had the earlier shares been captured, the debt would have stood, and
    these lapsing repaid it), but not the other way: shares carried before would have lapsed
    before the new part was owed. A part is repaid together by the shares that may repay it,
    whichever lapses first (docs/holds.md).
    """
    left = max(owed - repaid, 0)
    kept: list[RepayablePart] = []
    for part in sorted(parts, key=lambda p: p.origin):  # the oldest kept first
        amount = min(part.amount, left)
        left -= amount
        if amount:
            kept.append(msgspec.structs.replace(part, amount=amount))
    placed_in_period = sum(h.from_allowance for h in holds.values() if h.period == period)
    if new := min(placed_in_period, left):
        kept.append(RepayablePart(origin=period, amount=new))
    return tuple(kept)


def repayable_by(parts: tuple[RepayablePart, ...], period: str) -> int:
    """What the share of a hold placed in ``period`` may repay of a debt, lapsing now."""
    return sum(part.amount for part in parts if part.origin <= period)


def repaid_by(
    parts: tuple[RepayablePart, ...], period: str, debt_repaid: int
) -> tuple[RepayablePart, ...]:
    """The parts once the share of a hold placed in ``period`` repaid ``debt_repaid``: its
    own part first, then older ones, the newest first (those fewer other shares may repay),
    never below none (a settlement recorded by an earlier rule may have repaid more)."""
    left = debt_repaid
    changed = list(parts)
    for n in range(len(changed) - 1, -1, -1):  # kept oldest first
        if left and changed[n].origin <= period:
            less = min(changed[n].amount, left)
            left -= less
            changed[n] = msgspec.structs.replace(changed[n], amount=changed[n].amount - less)
    return tuple(part for part in changed if part.amount)


def repaying(settlement: Settlement, *, topup_balance: int, repayable: int) -> Settlement:
    """A settlement whose lapsing allowance share first repays a clawback's debt.

    What a hold carried over a reset would have lapsed with the old period's allowance,
    and repaid a debt then (``CreditAccount.reset_figures``): lapsing when the hold
    settles, it repays the debt the top-ups owe after the settlement (``topup_balance``
    before it), up to what lapses and to what it would have repaid at the reset
    (``repayable``): a debt that arose since is not the share's to repay, or the hold
    would have made credits the account without it does not have. Credits owed are
    repaid before an allowance is thrown away. ``repayable`` is what the carried shares may
    still repay (``repayable_by``).
    """
    owed = settlement.from_topup - topup_balance
    if settlement.lapsed <= 0 or owed <= 0 or repayable <= 0:
        return settlement
    return msgspec.structs.replace(settlement, debt_repaid=min(settlement.lapsed, owed, repayable))
