"""Stripe's events of one payment decided in any order, without I/O: the payment, refunds
and a dispute's statuses, through ``decide_payment`` and the payment intent's stream that
keeps what comes before the payment (ledger/handlers/payments.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.commands import ApplyPaymentEvent
from ledger.domain.account import CreditAccount
from ledger.domain.payment_intent import PaymentIntent
from ledger.handlers.payments import LINK_SCOPE, PaymentState, decide_payment
from ledger.payment_events import (
    CheckoutChange,
    CheckoutEvent,
    DisputeEvent,
    PaymentEvent,
    RefundEvent,
    RefundUpdate,
)
from tests.unit.test_checkout_domain import LIVES, session


class OnePayment:
    """One session, its account and its payment intent, kept in memory as the store would."""

    def __init__(self, credits: int, amount: int) -> None:
        self.session = session(credits, amount)
        self.account = CreditAccount.open("acct_1", 0, "2026-12")
        self.intent: PaymentIntent | None = None
        self.link: str | None = None

    def deliver(self, event: PaymentEvent) -> None:
        state = PaymentState(intent=self.intent)
        if isinstance(event, CheckoutEvent) or self.linked:
            state.session, state.account = self.session, self.account
        state.linked_to = self.link or None
        command = ApplyPaymentEvent(
            event_id=event.event_id, event_type="", meaning=event, unit_amount=1, currency="usd"
        )
        decide_payment(state, command)
        for key in state.keys:
            assert key.claim.scope == LINK_SCOPE
            assert self.link is None  # claimed once
            self.link = key.answer.decode()
        self.intent = state.intent

    @property
    def linked(self) -> bool:
        named = self.intent.session_id if self.intent is not None else self.link
        return bool(named)


def payment(amount: int) -> CheckoutEvent:
    return CheckoutEvent(
        event_id="evt_paid",
        change=CheckoutChange.COMPLETED,
        session_id="cs_1",
        paid=True,
        payment_intent="pi_1",
        amount_total=amount,
        currency="usd",
        account_id="acct_1",
        credits=None,
        checkout_url=None,
        expires_at=None,
    )


def kept(credits: int, amount: int, refunded: int, withdrawn: int) -> int:
    """What the README says the purchase still gives: refunds round down, chargebacks up."""
    refunded_credits = credits * min(amount, refunded) // amount
    disputed_credits = -(-credits * min(amount, withdrawn) // amount)
    return max(credits - refunded_credits - disputed_credits, 0)


MONEY_WITHDRAWN = (
    "needs_response",
    "under_review",
    "lost",
    "appeal_needs_response",
    "appeal_under_review",
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([1, 3, 10]),
    st.lists(st.integers(0, 1200), max_size=3),
    st.sampled_from(LIVES).flatmap(
        lambda life: st.tuples(st.just(life), st.lists(st.sampled_from(life), max_size=3))
    ),
    st.none() | st.integers(0, 1200),
    st.data(),
)
def test_a_payment_its_refunds_and_its_dispute_end_the_same_in_any_order(
    unit: int,
    refunds: list[int],
    dispute: tuple[list[str], list[str]],
    disputed: int | None,
    data: st.DataObject,
) -> None:
    """A dispute of no amount (None) is of what the refunds left, as Stripe's are."""
    credits = 100
    amount = credits * unit
    life, statuses = dispute
    events: list[PaymentEvent] = [payment(amount)]
    events += [
        RefundEvent(event_id=f"evt_r{n}", payment_intent="pi_1", amount_refunded=refunded)
        for n, refunded in enumerate(refunds)
    ]
    events += [
        DisputeEvent(
            event_id=f"evt_d{n}",
            dispute_id="dp_1",
            payment_intent="pi_1",
            status=s,
            amount=disputed,
        )
        for n, s in enumerate(statuses)
    ]
    world = OnePayment(credits, amount)
    for event in data.draw(st.permutations(events)):
        world.deliver(event)

    refunded = min(max(refunds, default=0), amount)
    last = max(statuses, key=life.index, default=None)
    withdrawn = 0
    if last in MONEY_WITHDRAWN:
        withdrawn = amount - refunded if disputed is None else disputed
    assert world.account.topup_balance == kept(credits, amount, refunded, withdrawn)
    assert world.session.credits_outstanding == world.account.topup_balance


def test_a_dispute_of_no_amount_ends_the_same_whether_a_refund_that_fails_came_first() -> None:
    """A dispute whose event names no amount (none, or one below zero: read as none) is of
    the money the refunds leave. Figured when the dispute was applied, it was what they left
    then: a lost one told after a refund that later failed kept 40 of 100 credits for no
    money, told before it none."""
    refund = RefundEvent(event_id="evt_r", payment_intent="pi_1", amount_refunded=400)
    created = RefundUpdate(
        event_id="evt_rc", refund_id="re_1", payment_intent="pi_1", amount=400, status="succeeded"
    )
    failed = RefundUpdate(
        event_id="evt_rf", refund_id="re_1", payment_intent="pi_1", amount=400, status="failed"
    )
    lost = DisputeEvent(
        event_id="evt_d", dispute_id="dp_1", payment_intent="pi_1", status="lost", amount=None
    )
    for order in (
        [payment(1000), refund, created, lost, failed],
        [payment(1000), lost, refund, created, failed],
        [refund, created, lost, payment(1000), failed],
    ):
        world = OnePayment(100, 1000)
        for event in order:
            world.deliver(event)
        assert world.account.topup_balance == 0, [e.event_id for e in order]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([1, 3, 10]),
    st.lists(
        st.tuples(
            st.sampled_from(["needs_response", "under_review", "lost", "won"]),
            st.none() | st.integers(1, 1200),
        ),
        min_size=2,
        max_size=4,
    ),
    st.data(),
)
def test_a_dispute_told_of_other_amounts_in_one_status_ends_the_same_in_any_order(
    unit: int, told: list[tuple[str, int | None]], data: st.DataObject
) -> None:
    """Stripe's disputed amount can differ from the charge's, and each of a dispute's events
    carries it as it stands (``charge.dispute.created`` and ``funds_withdrawn`` both say
    ``needs_response``): of one status, the most money told counts (None: the whole charge),
    whichever came first. The first one kept, a chargeback of 600 then of 1,000 of a 1,000
    charge kept 40 of 100 credits, told the other way round none."""
    credits = 100
    amount = credits * unit
    events: list[PaymentEvent] = [payment(amount)]
    events += [
        DisputeEvent(
            event_id=f"evt_d{n}", dispute_id="dp_1", payment_intent="pi_1", status=s, amount=a
        )
        for n, (s, a) in enumerate(told)
    ]
    world = OnePayment(credits, amount)
    for event in data.draw(st.permutations(events)):
        world.deliver(event)

    stage = ["needs_response", "under_review", "lost", "won"]
    last = max((s for s, _ in told), key=stage.index)
    disputed = max(amount if a is None else a for s, a in told if s == last)
    withdrawn = 0 if last == "won" else disputed
    assert world.account.topup_balance == kept(credits, amount, 0, withdrawn)
    assert world.session.credits_outstanding == world.account.topup_balance
