"""Holds as pure rules: reserve, capture, release, expire, and a reset in between."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from eventsourcing.domain import Snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain.account import CreditAccount
from ledger.domain.errors import (
    CaptureExceedsHold,
    HoldHasExpired,
    HoldNotFound,
    InsufficientCredits,
)
from ledger.store.mapper import MsgspecMapper
from tests.unit.test_account_domain import split

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)


def account(allowance: int = 1000, topup: int = 0) -> CreditAccount:
    opened = CreditAccount.open("acct_1", allowance, "2026-11")
    if topup:
        opened.purchase(session_id="cs_1", credits=topup)
    return opened


def figures(credits: CreditAccount) -> tuple[int, int, int, int]:
    return credits.allowance_remaining, credits.topup_balance, credits.held, credits.available


def test_a_hold_reserves_without_spending_and_takes_allowance_first() -> None:
    credits = account(allowance=1000, topup=500)

    hold = credits.place_hold("h1", 1200, "job", LATER)

    assert (hold.from_allowance, hold.from_topup) == (1000, 200)
    assert credits.balance == 1500
    assert figures(credits) == (1000, 500, 1200, 300)
    with pytest.raises(InsufficientCredits):
        credits.spend(301, "more than is left")
    with pytest.raises(InsufficientCredits):
        credits.place_hold("h2", 301, "more than is left", LATER)
    assert split(credits.spend(300, "what is left")) == (0, 300)
    assert credits.available == 0


def test_a_spend_while_a_hold_is_open_takes_the_free_allowance_first() -> None:
    credits = account(allowance=1000, topup=500)
    credits.place_hold("h1", 600, "job", LATER)

    assert split(credits.spend(500, "call")) == (400, 100)
    assert figures(credits) == (600, 400, 600, 400)


def test_capturing_less_spends_that_and_gives_the_rest_back() -> None:
    credits = account(allowance=100, topup=500)
    credits.place_hold("h1", 300, "job", LATER)  # 100 allowance, 200 top-ups

    settlement = credits.capture_hold("h1", 150, NOW)

    assert (settlement.captured, settlement.from_allowance, settlement.from_topup) == (150, 100, 50)
    assert (settlement.released, settlement.lapsed) == (150, 0)
    assert figures(credits) == (0, 450, 0, 450)
    with pytest.raises(HoldNotFound):
        credits.capture_hold("h1", 150, NOW)


def test_capturing_more_than_held_is_refused_and_records_nothing() -> None:
    credits = account()
    credits.place_hold("h1", 300, "job", LATER)
    credits.collect_events()

    with pytest.raises(CaptureExceedsHold):
        credits.capture_hold("h1", 301, NOW)

    assert credits.collect_events() == []
    assert credits.held == 300


def test_an_expired_hold_cannot_be_captured_and_expires_once() -> None:
    credits = account()
    credits.place_hold("h1", 300, "job", LATER)

    assert credits.expire_hold("h1", NOW) is None  # not due yet
    with pytest.raises(HoldHasExpired, match=r"^The hold h1 expired at 20\d\d-"):
        credits.capture_hold("h1", 100, LATER)  # its message was the hold's id alone
    expired = credits.expire_hold("h1", LATER)

    assert expired is not None
    assert (expired.released, expired.lapsed) == (300, 0)
    assert figures(credits) == (1000, 0, 0, 1000)
    assert credits.expire_hold("h1", LATER) is None


def test_a_reset_carries_an_open_holds_allowance_share_and_frees_the_full_plan() -> None:
    credits = account(allowance=1000, topup=200)
    credits.spend(300, "before")
    credits.place_hold("h1", 600, "long job", LATER)  # 600 of the 700 left of the allowance

    credits.reset_month("2026-12")

    # The new period's 1,000 are free; the hold keeps its 600 from November.
    assert figures(credits) == (1600, 200, 600, 1200)
    settlement = credits.capture_hold("h1", 250, NOW)
    assert (settlement.from_allowance, settlement.lapsed, settlement.released) == (250, 350, 350)
    assert figures(credits) == (1000, 200, 0, 1200)


def test_releasing_a_carried_hold_lets_its_old_allowance_lapse_but_returns_top_ups() -> None:
    credits = account(allowance=100, topup=500)
    credits.place_hold("h1", 300, "job", LATER)  # 100 allowance, 200 top-ups

    credits.reset_month("2026-12")
    assert figures(credits) == (200, 500, 300, 400)
    settlement = credits.release_hold("h1")

    assert (settlement.released, settlement.lapsed) == (300, 100)
    assert figures(credits) == (100, 500, 0, 600)


def test_a_hold_placed_after_the_reset_is_not_carried() -> None:
    credits = account(allowance=100)
    credits.reset_month("2026-12")
    credits.place_hold("h1", 80, "job", LATER)

    assert credits.release_hold("h1").lapsed == 0
    assert figures(credits) == (100, 0, 0, 100)


def test_holds_survive_the_mapper_and_a_snapshot() -> None:
    credits = account(allowance=1000, topup=100)
    credits.place_hold("h1", 1050, "job", LATER)
    mapper = MsgspecMapper()
    replayed = None
    for pending in credits.collect_events():
        replayed = mapper.to_domain_event(mapper.to_stored_event(pending)).mutate(replayed)
    assert replayed is not None
    assert figures(replayed) == figures(credits)

    snapshot = Snapshot.take(replayed)  # type: ignore[var-annotated]
    restored = mapper.to_domain_event(mapper.to_stored_event(snapshot)).mutate(None)
    assert figures(restored) == figures(credits)
    assert restored.capture_hold("h1", 1050, NOW).from_topup == 50


operations = st.lists(
    st.tuples(
        st.sampled_from(["spend", "hold", "capture", "release", "expire", "reset", "buy"]),
        st.integers(min_value=0, max_value=700),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_no_sequence_of_commands_overdraws_or_loses_credits(ops: list[tuple[str, int]]) -> None:
    credits = account(allowance=500, topup=100)
    periods = iter(f"{2027 + i // 12}-{i % 12 + 1:02d}" for i in range(100))
    next_hold = 0
    spent = bought = lapsed_or_reset = 0
    for op, n in ops:
        holds = list(credits.holds)
        before = credits.balance
        try:
            if op == "spend" and n:
                credits.spend(n, "x")
                spent += n
            elif op == "hold" and n:
                next_hold += 1
                credits.place_hold(f"h{next_hold}", n, "x", LATER)
            elif op == "capture" and holds:
                held = credits.hold(holds[0]).amount
                settlement = credits.capture_hold(holds[0], min(n, held), NOW)
                spent += settlement.captured
                lapsed_or_reset -= settlement.lapsed
            elif op in ("release", "expire") and holds:
                settlement = (
                    credits.release_hold(holds[0])
                    if op == "release"
                    else credits.expire_hold(holds[0], LATER)
                )
                assert settlement is not None
                lapsed_or_reset -= settlement.lapsed
            elif op == "reset":
                credits.reset_month(next(periods))
                lapsed_or_reset += credits.balance - before
            elif op == "buy" and n:
                credits.purchase(f"cs_{n}", n)
                bought += n
        except InsufficientCredits:
            pass
        assert credits.available >= 0
        assert credits.held == sum(credits.hold(h).amount for h in credits.holds)
        assert credits.free_allowance >= 0
        assert credits.topup_balance >= 0
    # Every credit is accounted for: opened with 600, plus purchases, minus spends,
    # plus what resets added, minus what lapsed when carried holds settled.
    assert credits.balance == 600 + bought - spent + lapsed_or_reset
