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
repay it), so that a hold never makes credits. What a reset keeps of the lapsing
allowance for held top-ups a refund took stands for those top-ups (``KeptPart``): a
capture spends it only for them (``backed``), never on a debt that arose since.
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


class KeptPart(msgspec.Struct, frozen=True):
    """Of what resets kept of the allowance for held top-ups (``kept_for_holds``), ``amount``
    credits standing for the held top-ups that come after the first ``ahead`` of them, in the
    order captures take them: a reset keeps credits for the top-ups it found nothing backed,
    after those it found backed; a hold placed since puts its top-ups first (what a reset
    kept was not kept for them); a settlement takes its captured top-ups from the first and
    lets the rest go from the last (``settled_kept``)."""

    ahead: int
    amount: int


def kept_among(parts: tuple[KeptPart, ...], first: int) -> int:
    """How many of the first ``first`` held top-ups what resets kept stands for."""
    return sum(max(min(part.amount, first - part.ahead), 0) for part in parts)


def backed(
    settlement: Settlement, hold_topup: int, *, parts: tuple[KeptPart, ...], held: int, kept: int
) -> Settlement:
    """Where a settlement's top-ups come from, when resets kept allowance for held top-ups
    that top-ups no longer backed (``kept`` of it, in ``parts``, among the ``held`` top-ups
    the account's holds reserve; this hold ``hold_topup`` of them).

    The captured top-ups are the first of them: of those what was kept stands for is spent
    from what was kept (``kept_spent``: from the allowance), the rest from the top-ups,
    below zero if need be. Had the holds settled before each reset, their captures would
    have taken top-ups then, and the reset's lapsing allowance repaid what they left owed:
    the top-ups it found backed came first, so what a refund took of them since is a debt
    the reset would not have repaid, and what was kept is spent only as the top-ups it was
    kept for (a refund after the reset made the capture one credit richer when it was spent
    on whatever the capture took first). What was kept for the top-ups that go with the
    hold's uncaptured ones, the last, lapses, as the allowance it came from would have.
    """
    taken = settlement.from_topup
    kept_spent = min(kept_among(parts, taken), kept)
    left = held - hold_topup
    kept_after = kept_among(parts, taken + left) - kept_among(parts, taken)
    return msgspec.structs.replace(
        settlement,
        from_topup=taken - kept_spent,
        kept_spent=kept_spent,
        kept_lapsed=kept - kept_spent - min(kept_after, kept - kept_spent),
    )


def _runs(parts: tuple[KeptPart, ...], held: int) -> list[list[Any]]:
    """The held top-ups in order, as runs of [kept for, how many]."""
    runs: list[list[Any]] = []
    at = 0
    for part in parts:
        if part.ahead > at:
            runs.append([False, part.ahead - at])
        runs.append([True, part.amount])
        at = part.ahead + part.amount
    if held > at:
        runs.append([False, held - at])
    return runs


def _parts(runs: list[list[Any]]) -> tuple[KeptPart, ...]:
    """The kept parts of these runs, neighbours joined (one way to write each)."""
    parts: list[KeptPart] = []
    at = 0
    for kept, length in runs:
        if kept and length:
            if parts and parts[-1].ahead + parts[-1].amount == at:
                parts[-1] = KeptPart(parts[-1].ahead, parts[-1].amount + length)
            else:
                parts.append(KeptPart(at, length))
        at += length
    return tuple(parts)


def _without(runs: list[list[Any]], kept: bool, count: int, *, last: bool) -> None:
    """Takes ``count`` held top-ups kept for (or not) out of ``runs``, the first or the last."""
    for run in reversed(runs) if last else runs:
        if count <= 0:
            return
        if run[0] is kept:
            taken = min(run[1], count)
            run[1] -= taken
            count -= taken


def placed_ahead(parts: tuple[KeptPart, ...], topups: int) -> tuple[KeptPart, ...]:
    """The parts once a hold placed with ``topups`` of top-ups puts them first."""
    return tuple(KeptPart(part.ahead + topups, part.amount) for part in parts)


def settled_kept(
    parts: tuple[KeptPart, ...],
    held: int,
    *,
    spent: int,
    taken: int,
    lapsed: int,
    left: int,
) -> tuple[KeptPart, ...]:
    """The parts once a settlement, of ``held`` held top-ups, spent ``spent`` of what was kept
    and ``taken`` top-ups, from the first, and let ``lapsed`` of what was kept and ``left``
    other top-ups go, from the last: as recorded, which the rule gives (``backed``) or an
    earlier one did."""
    runs = _runs(parts, held)
    _without(runs, True, spent, last=False)
    _without(runs, False, taken, last=False)
    _without(runs, True, lapsed, last=True)
    _without(runs, False, left, last=True)
    return _parts(runs)


def kept_after_reset(
    parts: tuple[KeptPart, ...], held: int, *, backed_topups: int, kept: int
) -> tuple[KeptPart, ...]:
    """The parts once a reset kept ``kept`` more for the held top-ups: for the first that
    nothing backs or was kept for, after the ``backed_topups`` that top-ups back."""
    runs: list[list[Any]] = []
    free_before = backed_topups
    for is_kept, length in _runs(parts, held):
        if is_kept or kept <= 0:
            runs.append([is_kept, length])
            continue
        backed_here = min(length, free_before)
        free_before -= backed_here
        keeping = min(length - backed_here, kept)
        kept -= keeping
        runs.extend(
            [[False, backed_here], [True, keeping], [False, length - backed_here - keeping]]
        )
    return _parts(runs)


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
