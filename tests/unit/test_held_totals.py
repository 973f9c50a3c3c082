"""What an account keeps of its open holds (``held_totals``) never drifts from the holds.

``CreditAccount.held_totals`` is derived state: changed as events place and settle holds,
left out of snapshots and made again on load. Random sequences of the account's commands
(holds placed, captured, released, expired by the sweeper's rule; spends, purchases,
refunds, disputes, grants, voids, grant expiries, resets, plan changes) are driven through
the real domain; after every step the kept totals are what the open holds give, and so are
those of a copy (the repository's), of a replay of the stored events, and of a load from a
snapshot of this version and of version 3 (upcast).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ledger.domain.account import CreditAccount
from ledger.domain.errors import DomainError
from ledger.domain.events import HoldPlaced
from ledger.domain.holds import HeldTotals, OpenHold
from ledger.handlers.expiries import expire_due
from ledger.store.mapper import MsgspecMapper
from ledger.store.repository import copy_of, snapshot_of
from tests.unit.test_holds_domain import loaded_from_a_version_3_snapshot

START = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
OFFSETS = [timezone(timedelta(minutes=m)) for m in (0, 330, -300, 840)]
"""Expiries written with other offsets: the same instants sort as instants, not as text."""


def recomputed(holds: dict[str, OpenHold]) -> tuple[int, int, int, dict[str, int], list[Any]]:
    """What the open holds add up to, from the holds alone (not through ``HeldTotals``)."""
    of_grants: dict[str, int] = {}
    for hold in holds.values():
        for grant_id, share in hold.from_grants:
            of_grants[grant_id] = of_grants.get(grant_id, 0) + share
    return (
        sum(h.amount for h in holds.values()),
        sum(h.from_allowance for h in holds.values()),
        sum(h.from_topup for h in holds.values()),
        {g: n for g, n in of_grants.items() if n},
        sorted((datetime.fromisoformat(h.expires_at), k) for k, h in holds.items()),
    )


def assert_totals_of_its_holds(account: CreditAccount, now: datetime) -> None:
    totals = account.held_totals
    kept = (totals.held, totals.from_allowance, totals.from_topup, totals.of_grants)
    assert (*kept, list(totals.expiries)) == recomputed(account.holds)
    assert totals == HeldTotals.of(account.holds)
    for grant_id, grant in account.grants.items():
        assert account.free_of_grant(grant_id) == grant.remaining - totals.of_grants.get(
            grant_id, 0
        )
    for later in (0, 1, 29, 30, 31, 60, 600):
        at = now + timedelta(minutes=later)
        assert account.holds_due(at) == [k for k, h in account.holds.items() if h.has_expired(at)]


class AnAccountsCommands(RuleBasedStateMachine):
    """One account, and beside it what the store and the repository would make of it."""

    def __init__(self) -> None:
        super().__init__()
        self.mapper = MsgspecMapper()
        self.now = START
        self.month = (2026, 11)
        self.next_id = 0
        self.account = CreditAccount.open("acct_totals", 300, "2026-11")
        self.account.purchase("cs_0", 200)
        self.replayed: CreditAccount | None = None
        self._record()

    def _id(self, prefix: str) -> str:
        self.next_id += 1
        return f"{prefix}{self.next_id}"

    def _record(self) -> None:
        """Commit the pending events: applied again, as stored, to the replayed account."""
        for event in self.account.collect_events():
            stored = self.mapper.to_stored_event(event)
            self.replayed = self.mapper.to_domain_event(stored).mutate(self.replayed)

    def _try(self, command: Any, *args: Any, **kwargs: Any) -> None:
        with contextlib.suppress(DomainError):  # a refusal records nothing (checked: the replay)
            command(*args, **kwargs)
        self._record()

    def _an_open_hold(self, pick: int) -> str | None:
        holds = list(self.account.holds)
        return holds[pick % len(holds)] if holds else None

    @rule(
        amount=st.integers(1, 250),
        minutes=st.integers(0, 120),
        offset=st.sampled_from(OFFSETS),
    )
    def place_hold(self, amount: int, minutes: int, offset: timezone) -> None:
        expires_at = (self.now + timedelta(minutes=minutes)).astimezone(offset)
        self._try(self.account.place_hold, self._id("h"), amount, "job", expires_at, self.now)

    @rule(pick=st.integers(0, 50), part=st.integers(0, 100))
    def capture(self, pick: int, part: int) -> None:
        if (hold_id := self._an_open_hold(pick)) is not None:
            amount = self.account.holds[hold_id].amount * part // 100
            self._try(self.account.capture_hold, hold_id, amount, self.now)

    @rule(pick=st.integers(0, 50))
    def release(self, pick: int) -> None:
        if (hold_id := self._an_open_hold(pick)) is not None:
            self._try(self.account.release_hold, hold_id)

    @rule(minutes=st.integers(0, 90))
    def time_passes_and_expiries_are_swept(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        self._try(expire_due, self.account, self.now)

    @rule(amount=st.integers(1, 200))
    def spend(self, amount: int) -> None:
        self._try(self.account.spend, amount, "call", self.now)

    @rule(credits=st.integers(1, 300))
    def purchase(self, credits: int) -> None:
        self._try(self.account.purchase, self._id("cs_"), credits)

    @rule(credits=st.integers(1, 300), kind=st.sampled_from(["refund", "dispute", "won"]))
    def money_taken_back_or_given_back(self, credits: int, kind: str) -> None:
        if kind == "refund":
            self._try(self.account.claw_back, "cs_0", credits)
        elif kind == "dispute":
            self._try(self.account.reverse_for_dispute, "cs_0", "dp_1", credits)
        else:
            self._try(self.account.restore_after_dispute, "cs_0", "dp_1", credits)

    @rule(
        amount=st.integers(1, 200),
        priority=st.integers(0, 3),
        minutes=st.none() | st.integers(1, 120),
    )
    def grant(self, amount: int, priority: int, minutes: int | None) -> None:
        ends = None if minutes is None else self.now + timedelta(minutes=minutes)
        self._try(
            self.account.grant,
            self._id("g"),
            amount,
            priority=priority,
            expires_at=ends,
            reason="",
            at=self.now,
        )

    @rule(pick=st.integers(0, 50))
    def void_grant(self, pick: int) -> None:
        grants = list(self.account.grants)
        if grants:
            self._try(self.account.void_grant, grants[pick % len(grants)], "x", self.now)

    @rule(allowance=st.sampled_from([0, 100, 300]))
    def a_new_month(self, allowance: int) -> None:
        year, month = self.month
        self.month = (year + month // 12, month % 12 + 1)
        self._try(self.account.change_allowance, allowance)
        self._try(self.account.reset_month, f"{self.month[0]:04d}-{self.month[1]:02d}")

    @invariant()
    def totals_are_what_the_holds_give(self) -> None:
        assert_totals_of_its_holds(self.account, self.now)

    @invariant()
    def a_copy_a_replay_and_snapshots_keep_the_same_totals(self) -> None:
        account = self.account
        assert vars(self.replayed) == vars(account)
        copied = copy_of(account)
        assert vars(copied) == vars(account)
        stored = self.mapper.to_stored_event(snapshot_of(account))
        from_snapshot = self.mapper.to_domain_event(stored).mutate(None)
        assert vars(from_snapshot) == vars(account)
        from_version_3 = loaded_from_a_version_3_snapshot(account)
        assert from_version_3.held_totals == account.held_totals
        for loaded in (copied, from_snapshot, from_version_3):
            assert_totals_of_its_holds(loaded, self.now)


AnAccountsCommands.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
test_held_totals_never_drift_from_the_holds = AnAccountsCommands.TestCase


def test_a_recorded_hold_with_a_share_of_0_of_a_grant_loads_and_settles() -> None:
    """A HoldPlaced recorded with a grant's share of 0 (the commands record none, the
    audit's split check takes shares of 0 or more) loaded before totals were kept, and
    then made its stream unreadable (KeyError: the totals dropped a grant they never had)."""
    account = CreditAccount.open("acct_totals", 100, "2026-11")
    account.grant("g1", 50, priority=0, expires_at=None, reason="", at=START)
    account.trigger_event(
        HoldPlaced,
        hold_id="h1",
        amount=10,
        from_allowance=10,
        from_topup=0,
        reason="",
        expires_at=(START + timedelta(hours=1)).isoformat(),
        from_grants={"g1": 0},
    )
    assert_totals_of_its_holds(account, START)
    account.release_hold("h1")
    assert_totals_of_its_holds(account, START)
    assert (account.held, account.free_of_grant("g1")) == (0, 50)
