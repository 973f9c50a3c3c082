"""Holds neither make nor lose credits: a hold released, expired or captured for nothing
leaves the account as it would be had the hold never been placed, whatever came between
(grants, their expiry or void, monthly resets, purchases; refunds and disputes, but for
the loss the README owns to)."""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from ledger.domain.account import CreditAccount
from ledger.domain.errors import DomainError
from ledger.domain.events import CreditsSpent, HoldCaptured
from ledger.store.mapper import MsgspecMapper
from ledger.store.repository import snapshot_of

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PERIODS = [f"{2026 + (10 + i) // 12}-{(10 + i) % 12 + 1:02d}" for i in range(40)]

SETUP = st.lists(
    st.tuples(st.sampled_from(["spend", "buy", "grant"]), st.integers(1, 120), st.integers(0, 4)),
    max_size=6,
)
ADJUSTMENTS = ["refund", "reverse", "restore", "owe"]
BETWEEN_KINDS = ["reset", "void", "tick", "buy", "grant"]
GRANT_KINDS = ("grant", "void", "tick")


def between(kinds: list[str]) -> st.SearchStrategy[list[tuple[str, int, int]]]:
    """Operations whose outcome does not hang on what is free, so that they do the same with
    the hold open or never placed (a spend would take other buckets while it is open)."""
    return st.lists(
        st.tuples(st.sampled_from(kinds), st.integers(1, 120), st.integers(0, 4)), max_size=8
    )


class World:
    """One account and the clock and ids its operations use."""

    def __init__(self) -> None:
        self.account = CreditAccount.open("acct_world", 100, "2026-11")
        self.clock = NOW
        self.periods = iter(PERIODS)
        self.grants: list[str] = []
        self.bought: list[tuple[str, int]] = []
        self.reversed: list[tuple[str, int]] = []
        self.hold_from_allowance = 0

    def live(self, operations: list[tuple[str, int, int]]) -> None:
        """Each operation in turn, those refused left out."""
        for operation in operations:
            with suppress(DomainError):
                self.apply(*operation)

    def apply(self, kind: str, n: int, pick: int) -> None:
        """One operation; a refusal leaves the account as it was."""
        account = self.account
        if kind == "spend":
            account.spend(n, "", self.clock)
        elif kind == "buy":
            session = f"cs_{len(self.bought)}"
            account.purchase(session, n)
            self.bought.append((session, n))
        elif kind == "grant":
            grant_id = f"g_{len(self.grants)}"
            expires_at = None if pick == 0 else self.clock + timedelta(days=pick)
            account.grant(
                grant_id, n, priority=10 * pick, expires_at=expires_at, reason="", at=self.clock
            )
            self.grants.append(grant_id)
        elif kind == "reset":
            account.reset_month(next(self.periods))
        elif kind == "void" and self.grants:
            account.void_grant(self.grants[pick % len(self.grants)], "", self.clock)
        elif kind == "tick":
            self.clock += timedelta(days=pick + 1)
            account.expire_due_grants(self.clock)
        elif kind == "refund" and self.bought:
            session, credits = self.bought.pop(pick % len(self.bought))
            account.claw_back(session, min(n, credits))
        elif kind == "reverse" and self.bought:
            session, credits = self.bought[pick % len(self.bought)]
            taken = min(n, credits)
            account.reverse_for_dispute(session, "dp", taken)
            self.reversed.append((session, taken))
        elif kind == "restore" and self.reversed:
            session, credits = self.reversed.pop(0)
            account.restore_after_dispute(session, "dp", credits)
        elif kind == "owe":  # bought, spent, then disputed and refunded: a debt of n
            session = f"cs_owed_{len(self.bought)}_{n}"
            account.purchase(session, n)
            account.reverse_for_dispute(session, "dp", n)
            account.claw_back(session, n)


def state(account: CreditAccount) -> dict[str, Any]:
    """What the account holds, bucket by bucket and grant by grant."""
    return {
        "allowance_remaining": account.allowance_remaining,
        "topup_balance": account.topup_balance,
        "granted": account.granted,
        "grants": {k: (g.remaining, g.status) for k, g in account.grants.items()},
        "held": account.held,
        "available": account.available,
        "kept_for_holds": account.kept_for_holds,
    }


SETTLEMENTS = st.sampled_from(["release", "expire", "capture nothing"])


def lived(
    setup: list[tuple[str, int, int]],
    between: list[tuple[str, int, int]],
    hold: int | None,
    settle: str,
) -> World:
    """The world after ``setup``, a hold of ``hold`` (None: none) placed, ``between``, and
    the hold settled (``settle``); an expiry comes 90 days on, with or without a hold."""
    world = World()
    world.live(setup)
    if hold is not None:
        placed = world.account.place_hold(
            "h", hold, "", world.clock + timedelta(days=90), world.clock
        )
        world.hold_from_allowance = placed.from_allowance
    world.live(between)
    if settle == "expire":
        world.clock += timedelta(days=90)
    if hold is not None:
        if settle == "expire":
            assert world.account.expire_hold("h", world.clock) is not None
        elif settle == "release":
            world.account.release_hold("h")
        else:
            world.account.capture_hold("h", 0, world.clock)
    world.account.expire_due_grants(world.clock)
    return world


def both_worlds(
    setup: list[tuple[str, int, int]], between: list[tuple[str, int, int]], amount: int, settle: str
) -> tuple[CreditAccount, CreditAccount, int]:
    """The account with the hold placed and settled, without it, and what the hold reserved
    of the allowance."""
    without = World()
    without.live(setup)
    assume(amount <= without.account.available_at(without.clock))
    held = lived(setup, between, amount, settle)
    return held.account, lived(setup, between, None, settle).account, held.hold_from_allowance


@settings(max_examples=400, deadline=None)
@given(SETUP, between(BETWEEN_KINDS), st.integers(1, 400), SETTLEMENTS)
def test_a_hold_released_leaves_the_account_as_if_never_placed(
    setup: list[tuple[str, int, int]], between: list[tuple[str, int, int]], amount: int, settle: str
) -> None:
    held, never, _ = both_worlds(setup, between, amount, settle)
    assert state(held) == state(never)


@settings(max_examples=400, deadline=None)
@given(SETUP, between(BETWEEN_KINDS + ADJUSTMENTS), st.integers(1, 400), SETTLEMENTS)
@example(  # a debt that arose after the reset, which the share lapsing later once repaid
    setup=[],
    between=[("reset", 1, 0), ("reset", 1, 0), ("buy", 1, 0), ("reverse", 1, 0), ("refund", 1, 0)],
    amount=1,
    settle="release",
)
@example(  # carried over two resets: the second repaid the debt the share was left to repay
    setup=[("buy", 50, 0), ("buy", 30, 0)],
    between=[
        *[("reverse", 50, 0), ("refund", 50, 0), ("reset", 1, 0), ("reset", 1, 0)],
        *[("reset", 1, 0), ("reverse", 30, 0), ("refund", 30, 0)],
    ],
    amount=100,
    settle="release",
)
@example(  # a debt the carrying reset left owed, repaid by the next one's lapsing allowance
    setup=[("spend", 1, 0), ("buy", 1, 0)],
    between=[
        ("reset", 1, 0),  # the same period: nothing
        ("reverse", 1, 0),
        ("reverse", 1, 0),  # 1 owed
        ("reset", 1, 0),  # carries the share, repaying none of the 1: it may
        ("reset", 1, 0),  # the new allowance lapses and repays the 1
        ("refund", 1, 0),  # 1 owed again, not the share's
    ],
    amount=99,
    settle="release",
)
def test_a_hold_released_across_refunds_makes_no_credits_and_loses_at_most_its_carried_share(
    setup: list[tuple[str, int, int]], between: list[tuple[str, int, int]], amount: int, settle: str
) -> None:
    """With a refund's debt, a reset repays it from the allowance that lapses; a hold's
    allowance share carried over that reset lapses when the hold settles and repays the
    debt owed then, which a purchase in between may have repaid, but no more than the reset
    left owed, less what later resets repaid of it (docs/holds.md)."""
    held, never, share = both_worlds(setup, between, amount, settle)
    assert held.balance <= never.balance
    assert never.balance - held.balance <= share
    assert (held.held, held.kept_for_holds) == (0, 0)


MANY_HOLDS = st.lists(
    st.one_of(
        st.tuples(st.just("place"), st.integers(1, 250), st.integers(0, 250)),
        st.tuples(st.just("settle"), st.integers(0, 1), st.integers(0, 4)),
        st.tuples(
            st.sampled_from(BETWEEN_KINDS + ADJUSTMENTS), st.integers(1, 120), st.integers(0, 4)
        ),
    ),
    max_size=16,
)


@st.composite
def kept_then_refunded(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    """A hold on top-ups a debt leaves partly unbacked, two resets (the second keeps lapsing
    allowance for them), a debt after them, and the hold settled: what rarely comes of
    drawing steps one by one (docs/holds.md, "What a reset keeps for held top-ups stands
    for them")."""
    bought = draw(st.integers(2, 250))
    return [
        ("buy", bought, 0),
        ("place", draw(st.integers(1, 250)), draw(st.integers(0, 250))),
        ("owe", draw(st.integers(1, bought)), 0),
        ("reset", 1, 0),
        ("reset", 1, 0),
        ("owe", draw(st.integers(1, 250)), 0),
        ("settle", 1, draw(st.integers(0, 4))),
    ]


WITH_KEPT = st.builds(
    lambda before, kept, after: [*before, *kept, *after],
    MANY_HOLDS,
    kept_then_refunded(),
    MANY_HOLDS,
)
"""Steps in which resets keep allowance for held top-ups, with debts after them."""


class TwoWorlds:
    """The same history lived twice: once with holds, each captured for what it was placed
    to capture (released or expired if nothing), and once with no hold at all, where each
    hold's capture is spent when the hold was placed (a capture spends the hold's allowance
    share, then its grant shares in burn order, then top-ups: the buckets a spend of that
    much then takes first)."""

    def __init__(self) -> None:
        self.held = World()
        self.never = World()
        self.open: list[tuple[str, int]] = []
        self.placed = 0
        self.shares = 0
        """What the holds reserved of allowances: the most they may lose."""

    def step(self, kind: str, n: int, pick: int) -> None:
        held, never = self.held.account, self.never.account
        if kind == "place":
            hold_id, capture = f"h{self.placed}", min(pick, n)
            expires_at = self.held.clock + timedelta(days=365)
            try:
                placed = held.place_hold(hold_id, n, "", expires_at, self.held.clock)
            except DomainError:
                return
            self.placed += 1
            self.shares += placed.from_allowance
            if capture:
                never.spend(capture, "", self.never.clock)  # never refused: it has more
            self.open.append((hold_id, capture))
        elif kind == "settle":
            if self.open:
                hold_id, capture = self.open.pop(pick % len(self.open))
                if capture or n:
                    held.capture_hold(hold_id, capture, self.held.clock)
                else:
                    held.release_hold(hold_id)
        else:
            refused = []
            for world in (self.held, self.never):
                try:
                    world.apply(kind, n, pick)
                except DomainError:
                    refused.append(world)
            assert refused in ([], [self.held, self.never])  # decided alike in both

    def end(self) -> None:
        """The holds still open are captured, or expire with any grant due by then."""
        for hold_id, capture in self.open:
            if capture:
                self.held.account.capture_hold(hold_id, capture, self.held.clock)
        for world in (self.held, self.never):
            world.clock += timedelta(days=366)
        for hold_id, capture in self.open:
            if not capture:
                assert self.held.account.expire_hold(hold_id, self.held.clock) is not None
        self.open = []
        for world in (self.held, self.never):
            world.account.expire_due_grants(world.clock)


def replayed(account: CreditAccount) -> dict[str, Any]:
    """The account as its events, through the mapper, give it, and as a snapshot of that
    loads (what the store and the audit read)."""
    mapper = MsgspecMapper()
    again = None
    for pending in account.collect_events():
        again = mapper.to_domain_event(mapper.to_stored_event(pending)).mutate(again)
    assert again is not None
    restored = mapper.to_domain_event(mapper.to_stored_event(snapshot_of(again))).mutate(None)
    assert vars(restored) == vars(again)
    return vars(again)


def lived_twice(setup: list[tuple[str, int, int]], steps: list[tuple[str, int, int]]) -> TwoWorlds:
    """``setup`` then ``steps`` in both worlds, and the holds still open settled: at every
    step the account with holds can spend no more than the one without."""
    worlds = TwoWorlds()
    worlds.held.live(setup)
    worlds.never.live(setup)
    for step in steps:
        worlds.step(*step)
        held, never = worlds.held, worlds.never
        assert held.account.available_at(held.clock) <= never.account.available_at(never.clock)
        assert held.account.balance <= never.account.balance + held.account.held
    worlds.end()
    return worlds


def spent_of(account: CreditAccount) -> tuple[int, int]:
    """What the account's spends and captures took of top-ups (what resets kept for them
    included) and of grants."""
    topups = grants = 0
    for event in account.pending_events:
        if isinstance(event, CreditsSpent | HoldCaptured):
            topups += event.from_topup + getattr(event, "kept_spent", 0)
            grants += sum(event.from_grants.values())
    return topups, grants


def topups_in_place_of_grants(account: CreditAccount, other: CreditAccount) -> int:
    """What ``account`` spent of top-ups where ``other`` spent grants: a hold open on a grant
    makes a later hold or spend take top-ups (the burn order), which a refund may then take,
    and the lapsing allowance repay (README, clawback policy), where had the grant been free
    they were left to the refund and the grant spent (docs/holds.md, "Holds neither make nor
    lose credits")."""
    (topups, grants), (other_topups, other_grants) = spent_of(account), spent_of(other)
    return max(min(topups - other_topups, other_grants - grants), 0)


def assert_no_credits_made(worlds: TwoWorlds, *, in_place_of_grants: bool = False) -> None:
    """``in_place_of_grants``: richer by no more than the top-ups the holds made captures
    take in place of grants (``topups_in_place_of_grants``)."""
    held, never = worlds.held.account, worlds.never.account
    burn_order = topups_in_place_of_grants(held, never) if in_place_of_grants else 0
    assert held.balance <= never.balance + burn_order
    assert never.balance - held.balance <= worlds.shares
    assert (held.held, held.kept_for_holds, held.topup_reserved) == (0, 0, 0)
    live = vars(held).copy()
    assert replayed(held) == {**live, "_pending_events": []}


CARRIED_WITH_A_DEBT = [
    *[("reset", 1, 0), ("reset", 1, 0)],  # the same period, then 2026-12: the full allowance
    *[("place", 60, 0), ("place", 30, 0), ("refund", 50, 0)],  # 50 owed, 10 allowance free
    ("reset", 1, 0),  # repays 10 of it; the first hold's share may repay the other 40
]
"""Two holds carried over one reset that left a debt (setup ``SPENT_ALL``)."""
SPENT_ALL = [("buy", 50, 0), ("spend", 100, 0), ("spend", 50, 0)]


@settings(max_examples=400, deadline=None)
@given(SETUP, st.one_of(MANY_HOLDS, WITH_KEPT))
@example(  # the second settled first; the first's share repays the 40
    setup=SPENT_ALL, steps=[*CARRIED_WITH_A_DEBT, ("settle", 0, 1), ("settle", 0, 0)]
)
@example(  # a purchase repays 20 of the 40 first, the share the rest
    setup=SPENT_ALL,
    steps=[*CARRIED_WITH_A_DEBT, ("buy", 20, 0), ("settle", 0, 0), ("settle", 0, 0)],
)
@example(  # the next reset repays the 40; a dispute and refund after it are not the shares'
    setup=SPENT_ALL,
    steps=[
        *CARRIED_WITH_A_DEBT,
        *[("reset", 1, 0), ("buy", 5, 0), ("reverse", 5, 1), ("refund", 5, 1)],
        *[("settle", 0, 0), ("settle", 0, 0)],
    ],
)
@example(  # a share placed since, carried by the next reset: not given the first shares' part
    setup=SPENT_ALL,
    steps=[
        *CARRIED_WITH_A_DEBT,
        *[("place", 60, 0), ("buy", 40, 0), ("reverse", 40, 1), ("refund", 40, 1)],
        *[("reset", 1, 0), ("settle", 0, 2), ("buy", 40, 0), ("reverse", 40, 2)],
        *[("refund", 40, 2), ("settle", 0, 0)],
    ],
)
def test_holds_open_together_and_released_in_any_order_make_no_credits(
    setup: list[tuple[str, int, int]], steps: list[tuple[str, int, int]]
) -> None:
    """Several holds, open together across resets, grants expiring and voided, purchases,
    refunds and disputes, released or expired in any order: the account is never richer than
    the same history without them, nor can it spend more at any moment; they lose at most
    what they reserved of allowances; replayed, and loaded from a snapshot, it is the same."""
    released = [
        (k, n, 0) if k == "place" else (k, 0 if k == "settle" else n, p) for k, n, p in steps
    ]
    assert_no_credits_made(lived_twice(setup, released))


@settings(max_examples=400, deadline=None)
@given(SETUP, MANY_HOLDS)
@example(  # a third hold, placed after a purchase, captured for 40 while the others settle
    setup=SPENT_ALL,
    steps=[*CARRIED_WITH_A_DEBT, ("buy", 30, 0), ("place", 50, 40), *[("settle", 1, 0)] * 3],
)
@example(  # the first holds a grant credit it does not capture: the second takes the top-up
    setup=[("buy", 1, 1), ("grant", 35, 0)],
    steps=[
        *[("place", 135, 134), ("place", 1, 99), ("reset", 0, 0), ("reset", 0, 0)],
        *[("refund", 1, 0), ("reset", 0, 3)],  # what the reset keeps for it pays the capture
    ],
)
def test_holds_open_together_and_captured_make_no_more_credits_than_spending_then(
    setup: list[tuple[str, int, int]], steps: list[tuple[str, int, int]]
) -> None:
    """As above, each hold captured for part of it or released, and compared with spending
    that part when the hold was placed. Grants neither expire nor are voided here: a hold
    open on the allowance makes a later one (or a spend) take a grant first, which then
    does not lapse with it; that is the burn order, not credits made. So is a hold open on a
    grant credit it does not capture, which makes a later one take top-ups a refund then
    takes: richer by at most those (``topups_in_place_of_grants``)."""
    kept = [(k, n, 0 if k == "grant" else p) for k, n, p in steps if k not in ("void", "tick")]
    lasting = [(k, n, 0 if k == "grant" else p) for k, n, p in setup]
    assert_no_credits_made(lived_twice(lasting, kept), in_place_of_grants=True)


NO_GRANTS = st.lists(
    st.tuples(st.sampled_from(["spend", "buy"]), st.integers(1, 120), st.integers(0, 4)),
    max_size=6,
)


@settings(max_examples=400, deadline=None)
@given(NO_GRANTS, WITH_KEPT.map(lambda steps: [s for s in steps if s[0] not in GRANT_KINDS]))
@example(  # a reset keeps 1 for the top-up a debt took; a refund after it, then a capture of 1
    setup=[("spend", 100, 0)],
    steps=[
        *[("buy", 50, 0), ("place", 50, 1), ("owe", 1, 0), ("reset", 1, 0), ("reset", 1, 0)],
        *[("reset", 1, 0), ("reset", 1, 0), ("refund", 50, 0), ("settle", 1, 0)],
    ],
)
@example(  # kept for the last 2 held top-ups; captures leave 1 of each hold: none spent
    setup=[("buy", 38, 0), ("buy", 97, 3), ("buy", 97, 3)],
    steps=[
        *[("place", 166, 165), ("place", 166, 165), ("refund", 2, 2)],
        *[("reset", 1, 0), ("reset", 1, 0), ("reset", 1, 0)],
    ],
)
def test_holds_captured_after_resets_kept_for_their_top_ups_make_no_more_than_spending_then(
    setup: list[tuple[str, int, int]], steps: list[tuple[str, int, int]]
) -> None:
    """As above, with resets that keep lapsing allowance for held top-ups a debt left unbacked
    and debts after them: what was kept is spent only as the top-ups it was kept for, never on
    a debt that arose since (docs/holds.md, "What a reset keeps for held top-ups stands for
    them"). No grants: a hold open on a grant makes a later hold take top-ups that what a
    reset kept then pays for, where spending then took the grant (the burn order)."""
    assert_no_credits_made(lived_twice(setup, steps))
