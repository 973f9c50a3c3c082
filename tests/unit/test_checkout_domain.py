"""The Checkout session's and the account's payment rules, without I/O."""

from __future__ import annotations

from ledger.domain.checkout import CheckoutSession


def session(credits: int = 1000, amount: int = 1000) -> CheckoutSession:
    return CheckoutSession(
        session_id="cs_1",
        account_id="acct_1",
        credits=credits,
        amount=amount,
        currency="usd",
        checkout_url="u",
        expires_at=0,
    )


def test_a_session_pays_out_once() -> None:
    checkout = session()

    assert checkout.pay(payment_intent="pi_1", amount_paid=1000, currency="usd") == 1000
    assert checkout.pay(payment_intent="pi_1", amount_paid=1000, currency="usd") == 0
    assert checkout.status == "paid"


def test_a_paid_session_never_becomes_expired_or_failed() -> None:
    checkout = session()
    checkout.pay(payment_intent="pi_1", amount_paid=1000, currency="usd")

    assert not checkout.expire()
    assert not checkout.fail()
    assert checkout.status == "paid"


def test_currency_is_compared_without_case() -> None:
    assert session().pay(payment_intent=None, amount_paid=1000, currency="USD") == 1000


def test_refund_shares_round_down_and_never_exceed_the_purchase() -> None:
    checkout = session(credits=1000, amount=3000)  # 3 cents a credit
    checkout.pay(payment_intent="pi_1", amount_paid=3000, currency="usd")

    assert checkout.refund(1000) == 333
    assert checkout.refund(2000) == 333
    assert checkout.refund(3000) == 334
    assert checkout.refund(9999) == 0
    assert checkout.credits_clawed_back == 1000
    assert checkout.status == "refunded"


def test_an_unpaid_session_has_nothing_to_refund_or_dispute() -> None:
    checkout = session()

    assert checkout.refund(1000) == 0
    assert checkout.open_dispute_case("dp_1") == 0
