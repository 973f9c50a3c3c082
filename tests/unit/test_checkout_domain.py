"""The Checkout session's payment rules, without I/O: payments, refunds, disputes, inquiries."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain.adjustments import Dispute, taken_back
from ledger.domain.checkout import Adjustment, CheckoutSession


def session(credits: int = 1000, amount: int = 1000) -> CheckoutSession:
    return CheckoutSession.request(
        session_id="cs_1",
        account_id="acct_1",
        credits=credits,
        amount=amount,
        currency="usd",
        checkout_url="u",
        expires_at=0,
    )


def paid(credits: int = 1000, amount: int = 1000) -> CheckoutSession:
    checkout = session(credits, amount)
    checkout.pay(payment_intent="pi_1", amount_paid=amount, currency="usd")
    return checkout


def test_a_session_pays_out_once() -> None:
    checkout = session()

    assert checkout.pay(payment_intent="pi_1", amount_paid=1000, currency="usd") == 1000
    assert checkout.pay(payment_intent="pi_1", amount_paid=1000, currency="usd") == 0
    assert checkout.status == "paid"


def test_a_paid_session_never_becomes_expired_or_failed() -> None:
    checkout = paid()

    assert not checkout.expire()
    assert not checkout.fail()
    assert checkout.status == "paid"


def test_currency_is_compared_without_case() -> None:
    assert session().pay(payment_intent=None, amount_paid=1000, currency="USD") == 1000


def test_refund_shares_round_down_and_never_exceed_the_purchase() -> None:
    checkout = paid(credits=1000, amount=3000)  # 3 cents a credit

    assert checkout.refund(1000).clawed_back == 333
    assert checkout.refund(2000).clawed_back == 333
    assert checkout.refund(3000).clawed_back == 334
    assert checkout.refund(9999) == Adjustment()
    assert checkout.credits_clawed_back == 1000
    assert checkout.status == "refunded"


def test_an_older_smaller_refund_figure_changes_nothing() -> None:
    checkout = paid(credits=1000, amount=7000)

    assert checkout.refund(3500).clawed_back == 500
    assert checkout.refund(700) == Adjustment()
    assert checkout.credits_clawed_back == 500


def test_an_unpaid_session_has_nothing_to_take_back() -> None:
    checkout = session()

    assert checkout.refund(1000) == Adjustment()
    assert checkout.dispute("dp_1", "needs_response", 1000).reversed == 0


def test_an_inquiry_takes_nothing_back_and_its_closing_gives_nothing() -> None:
    checkout = paid()

    assert checkout.dispute("dp_1", "warning_needs_response", 1000) == Adjustment("dp_1")
    assert checkout.dispute("dp_1", "warning_under_review", 1000) == Adjustment("dp_1")
    assert checkout.dispute("dp_1", "warning_closed", 1000) == Adjustment("dp_1")
    assert checkout.credits_outstanding == 1000


def test_an_inquiry_that_becomes_a_chargeback_takes_back_then() -> None:
    checkout = paid()

    checkout.dispute("dp_1", "warning_needs_response", 1000)
    assert checkout.dispute("dp_1", "needs_response", 1000).reversed == 1000
    assert checkout.dispute("dp_1", "won", 1000).restored == 1000
    assert checkout.credits_outstanding == 1000


def test_a_lost_dispute_then_a_refund_of_the_same_money_never_takes_twice() -> None:
    checkout = paid()

    assert checkout.dispute("dp_1", "lost", 1000).reversed == 1000
    adjustment = checkout.refund(1000)

    assert adjustment.clawed_back - adjustment.restored == 0
    assert checkout.credits_outstanding == 0


def test_a_refund_and_a_lost_chargeback_of_all_the_money_take_back_every_credit() -> None:
    """At 10 cents a credit, 405 refunded and the other 595 lost to a chargeback left the
    customer a credit for no money: each share was rounded down (a refunds review). Stripe
    may tell the chargeback first, before the refund it came after."""
    for refund_first in (True, False):
        checkout = paid(credits=100, amount=1000)
        if refund_first:
            checkout.refund(405)
        checkout.dispute("dp_1", "lost", 595)
        if not refund_first:
            checkout.refund(405)

        assert checkout.credits_outstanding == 0


def test_an_old_dispute_status_after_a_newer_one_changes_nothing() -> None:
    checkout = paid()

    assert checkout.dispute("dp_1", "lost", 1000).reversed == 1000
    assert checkout.dispute("dp_1", "needs_response", 1000) == Adjustment()
    assert checkout.dispute("dp_1", "warning_needs_response", 1000) == Adjustment()


def test_a_lost_chargeback_appealed_and_won_gives_the_credits_back() -> None:
    """Stripe's appeal of a lost dispute (``appeal_needs_response``, ``appeal_under_review``,
    then ``won`` or ``lost``): the bank holds the money while it is appealed, and a win
    reinstates it. ``won`` after ``lost`` was old news: the credits stayed reversed."""
    checkout = paid()

    assert checkout.dispute("dp_1", "lost", 1000).reversed == 1000
    assert checkout.dispute("dp_1", "appeal_needs_response", 1000) == Adjustment("dp_1")
    assert checkout.dispute("dp_1", "appeal_under_review", 1000) == Adjustment("dp_1")
    assert checkout.dispute("dp_1", "won", 1000).restored == 1000
    assert checkout.credits_outstanding == 1000
    for older in ("lost", "appeal_under_review", "needs_response"):
        assert checkout.dispute("dp_1", older, 1000) == Adjustment()


def test_an_appeal_told_after_its_win_takes_nothing_back() -> None:
    checkout = paid()

    assert checkout.dispute("dp_1", "won", 1000) == Adjustment("dp_1")
    for older in ("appeal_under_review", "appeal_needs_response", "lost", "needs_response"):
        assert checkout.dispute("dp_1", older, 1000) == Adjustment()
    assert checkout.credits_outstanding == 1000


def test_a_dispute_of_a_negative_amount_gives_back_nothing_it_never_took() -> None:
    """A signed dispute of -500 restored 500 credits on a purchase nothing was taken from,
    and 500 more for each dispute id (an HTTP review)."""
    checkout = paid(credits=100, amount=100)

    for n in range(2):
        assert checkout.dispute(f"dp_{n}", "needs_response", -500) == Adjustment(
            dispute_id=f"dp_{n}"
        )

    assert checkout.credits_outstanding == 100
    assert taken_back(100, 100, 0, checkout.disputes).disputed == 0


# One dispute's statuses, as Stripe reports them along one life: an inquiry that
# closes or escalates, a chargeback won or lost, a loss appealed (API version 2026-10-28)
# and won or lost again. Any subset of them may arrive.
LIVES = [
    ["warning_needs_response", "warning_under_review", "warning_closed"],
    ["warning_needs_response", "needs_response", "under_review", "won"],
    ["needs_response", "under_review", "lost"],
    [
        "needs_response",
        "under_review",
        "lost",
        "appeal_needs_response",
        "appeal_under_review",
        "won",
    ],
    ["needs_response", "lost", "appeal_needs_response", "appeal_under_review", "lost"],
]
FACTS = st.tuples(
    st.lists(st.integers(0, 8000), max_size=3),
    st.sampled_from(LIVES).flatmap(lambda life: st.lists(st.sampled_from(life), max_size=3)),
).map(
    lambda refunds_and_statuses: (
        [("refund", r) for r in refunds_and_statuses[0]]
        + [("dispute", s) for s in refunds_and_statuses[1]]
    )
)


@settings(max_examples=200, deadline=None)
@given(FACTS, st.sampled_from([1, 3, 7]), st.none() | st.integers(0, 8000))
def test_what_is_taken_back_does_not_depend_on_the_order_of_the_facts(
    facts: list[tuple[str, object]], unit: int, dispute_amount: int | None
) -> None:
    """Refunds and disputes of any minor units, not only whole credits' worth; a dispute
    (None) of what the refunds left, as Stripe disputes."""
    credits = 1000
    amount = credits * unit
    refunded = max((int(value) for kind, value in facts if kind == "refund"), default=0)  # type: ignore[call-overload]
    disputed = max(amount - refunded, 0) if dispute_amount is None else dispute_amount
    outcomes = set()
    for order in itertools.islice(itertools.permutations(facts), 24):
        checkout = paid(credits, amount)
        for kind, value in order:
            if kind == "refund":
                checkout.refund(int(value))  # type: ignore[call-overload]
            else:
                checkout.dispute("dp_1", str(value), disputed)
        outcomes.add((checkout.credits_clawed_back, checkout.credits_reversed))
    assert len(outcomes) == 1
    (clawed, reversed_), *_ = outcomes
    assert 0 <= clawed + reversed_ <= credits
    if refunded + checkout.disputes.get("dp_1", Dispute("", 0)).withdrawn >= amount:
        assert clawed + reversed_ == credits  # all the money went back


def test_the_rule_for_what_is_taken_back() -> None:
    # 3 cents a credit: 400 cents refunded keep 133 credits back (rounded down).
    assert taken_back(1000, 3000, 400, {}).refunded == 133
