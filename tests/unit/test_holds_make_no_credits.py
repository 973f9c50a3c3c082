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

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PERIODS = [f"{2026 + (10 + i) // 12}-{(10 + i) % 12 + 1:02d}" for i in range(12)]

SETUP = st.lists(
    st.tuples(st.sampled_from(["spend", "buy", "grant"]), st.integers(1, 120), st.integers(0, 4)),
    max_size=6,
)
ADJUSTMENTS = ["refund", "reverse", "restore"]
BETWEEN_KINDS = ["reset", "void", "tick", "buy", "grant"]


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
