"""Allowance, top-ups, spending and monthly resets, as pure rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ledger.domain.account import CreditAccount
from ledger.domain.errors import (
    InsufficientCredits,
    InvalidAmount,
    InvalidPeriod,
    InvalidReason,
    PeriodOutOfOrder,
)
from ledger.domain.events import CreditsSpent


def account(allowance: int = 1000, topup: int = 0) -> CreditAccount:
    opened = CreditAccount.open("acct_1", allowance, "2026-11")
    if topup:
        opened.purchase(session_id="cs_1", credits=topup)
    return opened


def split(spent: CreditsSpent) -> tuple[int, int]:
    """Where a spend took its credits from: (the allowance, top-ups)."""
    return spent.from_allowance, spent.from_topup


def test_spending_burns_the_allowance_first_then_topups() -> None:
    credits = account(allowance=1000, topup=500)

    assert split(credits.spend(800, "a")) == (800, 0)
    assert split(credits.spend(300, "b")) == (200, 100)
    assert (credits.allowance_remaining, credits.topup_balance) == (0, 400)
    assert split(credits.spend(400, "c")) == (0, 400)
    assert credits.balance == 0


def test_a_spend_past_the_balance_is_refused_and_records_nothing() -> None:
    credits = account(allowance=100, topup=50)
    credits.collect_events()

    with pytest.raises(InsufficientCredits):
        credits.spend(151, "too much")

    assert credits.collect_events() == []
    assert credits.balance == 150


@pytest.mark.parametrize("amount", [0, -1])
def test_a_spend_must_be_positive(amount: int) -> None:
    with pytest.raises(InvalidAmount):
        account().spend(amount, "x")


def test_topups_survive_monthly_resets_over_several_months() -> None:
    credits = account(allowance=1000, topup=1000)
    credits.spend(1500, "work")  # all the allowance and half the top-up

    for period in ("2026-12", "2027-01", "2027-02"):
        assert credits.reset_month(period)
        assert credits.allowance_remaining == 1000
        assert credits.topup_balance == 500
        credits.spend(200, "some work")  # from the allowance only

    assert credits.topup_balance == 500
    assert credits.period == "2027-02"


def test_unspent_allowance_does_not_roll_over() -> None:
    credits = account(allowance=1000)
    credits.spend(100, "x")

    credits.reset_month("2026-12")

    assert credits.allowance_remaining == 1000


def test_a_reset_for_the_same_period_changes_nothing() -> None:
    credits = account()
    credits.spend(100, "x")
    credits.reset_month("2026-12")
    credits.spend(100, "y")
    credits.collect_events()

    assert not credits.reset_month("2026-12")
    assert credits.collect_events() == []
    assert credits.allowance_remaining == 900


def test_a_reset_for_an_earlier_period_is_refused() -> None:
    credits = account()
    credits.reset_month("2027-03")

    with pytest.raises(PeriodOutOfOrder):
        credits.reset_month("2027-02")


@pytest.mark.parametrize("period", ["2026-13", "2026-00", "26-12", "2026-1", "december"])
def test_periods_are_months_written_yyyy_mm(period: str) -> None:
    with pytest.raises(InvalidPeriod):
        account().reset_month(period)


def test_an_allowance_change_takes_effect_at_the_next_reset() -> None:
    credits = account(allowance=1000)

    assert credits.change_allowance(5000)
    assert credits.monthly_allowance == 1000
    assert credits.allowance_remaining == 1000
    assert not credits.change_allowance(5000)

    credits.reset_month("2026-12")
    assert credits.monthly_allowance == credits.allowance_remaining == 5000


def test_a_clawback_can_take_the_topup_balance_below_zero_and_a_purchase_repays_it() -> None:
    credits = account(allowance=100, topup=500)
    credits.spend(500, "work")  # 100 from the allowance, 400 from the top-up

    credits.claw_back(session_id="cs_1", credits=500)  # the purchase is refunded in full
    assert credits.topup_balance == -400
    assert credits.balance == -400
    with pytest.raises(InsufficientCredits):
        credits.spend(1, "nothing left")

    credits.reset_month("2026-12")  # the allowance comes back, the debt stays
    assert credits.balance == -300
    credits.purchase(session_id="cs_2", credits=1000)  # repays the debt first
    assert credits.topup_balance == 600


def test_a_clawbacks_debt_is_repaid_once_by_the_allowance_it_kept_from_use() -> None:
    """The debt kept as much of every month's allowance from being spent, and the reset let
    that lapse: a 500-credit debt cost 500 credits a month for good (a money review)."""
    credits = account(allowance=1000, topup=500)
    credits.spend(1500, "work")
    credits.claw_back(session_id="cs_1", credits=500)  # refunded after it was spent
    assert credits.topup_balance == -500

    spendable = []
    for period in ("2026-12", "2027-01", "2027-02"):
        credits.reset_month(period)
        spendable.append(credits.available)
        credits.spend(credits.available, "all there is")

    assert spendable == [500, 1000, 1000]  # the debt cost 500 once
    assert credits.topup_balance == 0
    [*_, reset, _] = credits.collect_events()
    assert reset.debt_repaid == 0


def test_a_reset_repays_a_debt_only_from_the_allowance_that_lapses() -> None:
    credits = account(allowance=1000, topup=500)
    credits.spend(1500, "work")
    credits.claw_back(session_id="cs_1", credits=500)
    credits.reset_month("2026-12")  # 1,000 back, 500 of it kept by the debt
    credits.place_hold("h1", 300, "job", datetime(2027, 6, 1, tzinfo=UTC))  # carried
    credits.spend(100, "work")
    credits.collect_events()

    credits.reset_month("2027-01")

    [reset] = credits.collect_events()
    assert (reset.held_allowance_carried, reset.debt_repaid) == (300, 500)  # 600 lapsed
    assert (credits.allowance_remaining, credits.topup_balance) == (1300, 0)


def test_a_debt_counts_what_open_holds_reserve_of_the_topups() -> None:
    """Top-ups 300 all held, then a clawback of 500: -200 on the books, but 500 kept from
    use (a diff review: the reset repaid 200)."""
    credits = account(allowance=100, topup=300)
    credits.spend(100, "work")
    credits.place_hold("h1", 300, "job", datetime(2027, 6, 1, tzinfo=UTC))  # all top-ups
    credits.claw_back(session_id="cs_1", credits=500)
    credits.reset_month("2026-12")  # nothing lapses yet: the allowance was spent
    assert (credits.topup_balance, credits.available) == (-200, 100 - 500)
    credits.collect_events()

    credits.reset_month("2027-01")  # the 100 that could not be spent lapse

    [reset] = credits.collect_events()
    assert reset.debt_repaid == 100
    assert credits.reset_figures() == (0, 100, 0)  # 100 owed, 400 more if h1 is captured


@pytest.mark.parametrize("settle", ["release", "capture"])
def test_a_debt_an_open_hold_might_incur_repaid_at_a_reset_lapses_when_the_hold_does_not(
    settle: str,
) -> None:
    """Top-ups refunded while a hold reserved them, then a reset repaid that debt with the
    allowance that lapsed: releasing the hold then turned the old allowance into top-ups that
    survive every reset (a holds review: 100 credits made from nothing)."""
    credits = account(allowance=100)
    credits.place_hold("h_allowance", 100, "job", datetime(2027, 6, 1, tzinfo=UTC))
    credits.purchase(session_id="cs_1", credits=100)
    credits.place_hold("h_topup", 100, "job", datetime(2027, 6, 1, tzinfo=UTC))  # the top-ups
    credits.release_hold("h_allowance")
    credits.claw_back(session_id="cs_1", credits=100)  # refunded while held
    credits.reset_month("2026-12")  # the 100 that could not be spent repay what it may owe

    if settle == "release":
        credits.release_hold("h_topup")  # it owed nothing after all
    else:
        credits.capture_hold("h_topup", 100, datetime(2026, 12, 2, tzinfo=UTC))  # repaid

    assert (credits.allowance_remaining, credits.topup_balance) == (100, 0)
    credits.reset_month("2027-01")
    assert (credits.allowance_remaining, credits.topup_balance) == (100, 0)


def test_a_partial_capture_spends_what_a_reset_kept_for_its_hold_first() -> None:
    credits = account(allowance=200, topup=300)
    credits.spend(200, "work")
    credits.place_hold("h1", 300, "job", datetime(2027, 6, 1, tzinfo=UTC))  # the top-ups
    credits.claw_back(session_id="cs_1", credits=300)
    credits.reset_month("2026-12")  # nothing lapses: the allowance was spent
    credits.reset_month("2027-01")  # the 200 h1 kept from use pay for 200 of it

    settlement = credits.capture_hold("h1", 250, datetime(2027, 1, 2, tzinfo=UTC))

    assert (settlement.kept_spent, settlement.from_topup) == (200, 50)
    assert credits.topup_balance == -50  # 250 spent of top-ups refunded, 200 paid for
    assert (credits.allowance_remaining, credits.available) == (200, 150)


@pytest.mark.parametrize("allowance", [-1, 1_000_000_001, 99_999_999_999_999_999_999])
def test_an_allowance_past_what_the_views_hold_is_refused_where_it_is_set(allowance: int) -> None:
    """The CLI and DEFAULT_MONTHLY_ALLOWANCE took any integer: one past a bigint, recorded,
    stopped every view for good (a CLI review)."""
    with pytest.raises(InvalidAmount, match="0 to 1000000000 credits"):
        CreditAccount.open("acct_big", allowance, "2026-12")
    account = CreditAccount.open("acct_big", 1_000_000_000, "2026-12")
    with pytest.raises(InvalidAmount, match="0 to 1000000000 credits"):
        account.change_allowance(allowance)
    assert account.change_allowance(0)


def test_a_reason_longer_than_the_api_takes_is_refused_on_every_road() -> None:
    """The CLI recorded 40,000 characters where the API takes 500 (a CLI review)."""
    account = CreditAccount.open("acct_reason", 1000, "2026-12")
    with pytest.raises(InvalidReason, match="at most 500 characters"):
        account.spend(1, "r" * 501)
    assert account.spend(1, "r" * 500).reason == "r" * 500
