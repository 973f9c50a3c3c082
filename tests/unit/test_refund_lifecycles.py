"""Refunds through every life Stripe gives them (``pending``, ``requires_action``,
``succeeded``, then ``failed`` or ``canceled``), some beside a chargeback of any part of the
charge, delivered in any order, some twice, the streams loaded from their snapshots midway:
the credits end as the facts say (ledger/domain/adjustments.py), the money refunded the
session records is what its facts give (what the audit judges), and never more is given back
than was taken. Complements tests/unit/test_failed_refunds.py (refunds that succeed at once)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain.adjustments import RETURNED_NOTHING, refunded_money, taken_back
from ledger.domain.checkout import PAID, REFUNDED
from ledger.payment_events import DisputeEvent, PaymentEvent, RefundEvent, RefundUpdate
from tests.unit.test_failed_refunds import in_order_and_shuffled, refund_figures
from tests.unit.test_holds_domain import loaded_from_an_older_snapshot
from tests.unit.test_payment_decisions import OnePayment, kept, payment

LIVES = (
    ("pending", "succeeded"),
    ("pending", "failed"),
    ("pending", "succeeded", "failed"),
    ("requires_action", "canceled"),
    ("requires_action", "succeeded"),
    ("succeeded",),
    ("succeeded", "failed"),
)
"""A refund's statuses in turn: the first is told by ``refund.created`` with the
``charge.refunded`` that counts it, each later one by ``charge.refund.updated`` and
``refund.updated`` (a failure also by ``refund.failed``, the same refund)."""

CHARGEBACKS = (
    ("needs_response",),
    ("needs_response", "lost"),
    ("needs_response", "won"),
    ("needs_response", "lost", "appeal_needs_response", "appeal_under_review"),
    ("needs_response", "lost", "appeal_needs_response", "appeal_under_review", "won"),
)


@dataclass(frozen=True)
class History:
    """Stripe's events for one charge's refunds and chargeback, in the order they happened."""

    events: list[PaymentEvent]
    refunded: int
    """The money the refunds return at the end."""
    withdrawn: int
    """The money the chargeback holds at the end."""


def refund_update(event_id: str, n: int, amount: int, status: str) -> RefundUpdate:
    return RefundUpdate(
        event_id=event_id, refund_id=f"re_{n}", payment_intent="pi_1", amount=amount, status=status
    )


@st.composite
def histories(draw: st.DrawFn, amount: int) -> History:
    """Up to three refunds, each made within what the charge has left and moved through its
    life, interleaved with the others' steps; perhaps a chargeback, of what the refunds left
    when it opens or of the whole charge (a refund still pending may then fail)."""
    events: list[PaymentEvent] = []
    lives: list[tuple[int, tuple[str, ...]]] = []
    told: list[int] = []  # how many of each refund's statuses happened
    figure = 0  # the charge's amount_refunded
    chargeback: tuple[int, tuple[str, ...]] | None = None
    to_make = draw(st.integers(1, 3))
    while True:
        going = [n for n, (_, life) in enumerate(lives) if told[n] < len(life)]
        if chargeback is None and figure < amount and draw(st.integers(0, 4)) == 0:
            whole = draw(st.booleans())
            disputed = draw(st.integers(1, amount if whole else amount - figure))
            chargeback = (disputed, draw(st.sampled_from(CHARGEBACKS)))
            events += [
                DisputeEvent(
                    event_id=f"evt_dp_{status}",
                    dispute_id="dp_1",
                    payment_intent="pi_1",
                    status=status,
                    amount=disputed,
                )
                for status in chargeback[1]
            ]
        if len(lives) < to_make and figure < amount and (not going or draw(st.booleans())):
            n = len(lives)
            refund = (draw(st.integers(1, amount - figure)), draw(st.sampled_from(LIVES)))
            lives.append(refund)
            told.append(1)
            figure += refund[0]
            events += [
                RefundEvent(event_id=f"evt_cr{n}", payment_intent="pi_1", amount_refunded=figure),
                refund_update(f"evt_rc{n}", n, refund[0], refund[1][0]),
            ]
        elif going:
            n = draw(st.sampled_from(going))
            refunded, life = lives[n]
            status = life[told[n]]
            told[n] += 1
            if status in RETURNED_NOTHING:
                figure -= refunded
            events += [
                refund_update(f"evt_cru{n}_{status}", n, refunded, status),
                refund_update(f"evt_ru{n}_{status}", n, refunded, status),
            ]
        else:
            break
    withdrawn = chargeback[0] if chargeback is not None and chargeback[1][-1] != "won" else 0
    return History(events, figure, withdrawn)


def planned() -> st.SearchStrategy[tuple[int, History]]:
    units = st.sampled_from([1, 3, 10])
    return units.flatmap(lambda unit: st.tuples(st.just(100 * unit), histories(100 * unit)))


@settings(max_examples=300, deadline=None)
@given(planned(), st.data())
def test_refund_lives_and_a_chargeback_end_as_their_facts_say_in_any_order(
    plan: tuple[int, History], data: st.DataObject
) -> None:
    amount, history = plan
    events = [payment(amount), *history.events]
    deliveries = [
        *data.draw(st.permutations(events)),
        *data.draw(st.lists(st.sampled_from(events), max_size=3)),
    ]
    loaded_at = data.draw(st.integers(0, len(deliveries)))
    world = OnePayment(100, amount)
    for n, event in enumerate(deliveries):
        if n == loaded_at:
            world.session = loaded_from_an_older_snapshot(world.session, 3)
            if world.intent is not None:
                world.intent = loaded_from_an_older_snapshot(world.intent, 2)
        world.deliver(event)
        session = world.session
        assert session.amount_refunded == min(
            refunded_money(session.largest_refunded, session.refunds), amount
        )
        # What the audit judges after every event: the refunds' share and the disputes'
        # each as the rule makes them of the facts, not only their sum.
        if session.paid:
            rule = taken_back(100, amount, session.amount_refunded, session.disputes)
            assert (session.credits_clawed_back, session.credits_reversed) == (
                rule.refunded,
                rule.disputed,
            )

    assert world.account.topup_balance == kept(100, amount, history.refunded, history.withdrawn)
    assert world.session.credits_outstanding == world.account.topup_balance
    assert world.session.amount_refunded == history.refunded
    assert world.session.status == (REFUNDED if history.refunded >= amount else PAID)
    clawed, given_back = refund_figures(world)
    assert 0 <= given_back <= clawed


@settings(max_examples=300, deadline=None)
@given(planned(), st.data())
def test_before_refund_created_refund_lives_never_take_more_and_end_the_same_in_any_order(
    plan: tuple[int, History], data: st.DataObject
) -> None:
    """Before API version 2024-10-28 (no ``refund.*`` events) a refund is known by its id
    only once its status changes (``charge.refund.updated``): every order ends as Stripe's
    own, never taking more than the money refunded (README: refunds that fail)."""
    amount, history = plan
    events = [
        payment(amount),
        *(e for e in history.events if not e.event_id.startswith(("evt_rc", "evt_ru"))),
    ]
    natural, world = in_order_and_shuffled(amount, events, data)

    assert world.account.topup_balance == natural.account.topup_balance
    assert world.account.topup_balance >= kept(100, amount, history.refunded, history.withdrawn)
    assert world.session.credits_outstanding == world.account.topup_balance
    clawed, given_back = refund_figures(world)
    assert 0 <= given_back <= clawed
