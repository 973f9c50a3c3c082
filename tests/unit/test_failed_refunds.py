"""A refund that fails gives back what its clawback took, once, whatever order Stripe tells
it in (ledger/domain/adjustments.py: ``refunded_money``).

Stripe reports a refund at once (``charge.refunded`` with the charge's cumulative
``amount_refunded``, and ``refund.created``) and counts it; the bank may return it days later:
the refund turns ``failed``, the charge's figure drops by its amount, and Stripe sends
``charge.refund.updated`` and ``refund.failed``, never a ``charge.refunded``. The events here
are the ones Stripe would send for a timeline of refunds made and failed, delivered in every
order the tests draw, some twice, through ``decide_payment`` (tests/unit/test_payment_decisions.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.adapters.stripe_webhooks import parse_event
from ledger.domain.adjustments import Refund, refunded_money
from ledger.domain.checkout import PAID, REFUNDED, CheckoutSession
from ledger.domain.events import CreditsClawedBack, CreditsRestored
from ledger.domain.payment_intent import PaymentIntent
from ledger.payment_events import PaymentEvent, RefundEvent, RefundUpdate
from tests.unit.test_checkout_domain import paid
from tests.unit.test_holds_domain import loaded_from_an_older_snapshot
from tests.unit.test_payment_decisions import OnePayment, kept, payment


@dataclass(frozen=True)
class Made:
    """Refund ``n`` of ``amount`` made (``fails``: the bank returns it later)."""

    n: int
    amount: int
    fails: bool


def stripe_events(
    amount: int,
    timeline: list[tuple[str, int]],
    refunds: list[Made],
    *,
    created_events: bool = True,
) -> tuple[list[PaymentEvent], int]:
    """What Stripe sends for ``timeline`` (("make" | "fail", refund)), and the money its
    refunds still return at the end. ``created_events`` False: an API version before
    2024-10-28, which sends no ``refund.created``."""
    events: list[PaymentEvent] = [payment(amount)]
    refunded = 0
    for step, n in timeline:
        made = refunds[n]
        if step == "make":
            refunded += made.amount
            events.append(
                RefundEvent(event_id=f"evt_cr{n}", payment_intent="pi_1", amount_refunded=refunded)
            )
            if created_events:
                events.append(refund_update(f"evt_rc{n}", n, made.amount, "succeeded"))
        else:
            refunded -= made.amount
            events.append(refund_update(f"evt_cru{n}", n, made.amount, "failed"))
            if created_events:
                events.append(refund_update(f"evt_rf{n}", n, made.amount, "failed"))
    return events, refunded


def refund_update(event_id: str, n: int, amount: int, status: str) -> RefundUpdate:
    return RefundUpdate(
        event_id=event_id, refund_id=f"re_{n}", payment_intent="pi_1", amount=amount, status=status
    )


@st.composite
def timelines(draw: st.DrawFn, amount: int) -> tuple[list[tuple[str, int]], list[Made]]:
    """Refunds made one after another within what the charge has left, some failing later."""
    refunds: list[Made] = []
    timeline: list[tuple[str, int]] = []
    to_fail: list[int] = []
    left = amount
    for n in range(draw(st.integers(1, 3))):
        if left <= 0:
            break
        made = Made(n, draw(st.integers(1, left)), draw(st.booleans()))
        refunds.append(made)
        # Failures of earlier refunds may come before this one is made.
        while to_fail:
            if not draw(st.booleans()):
                break
            failed = to_fail.pop(draw(st.integers(0, len(to_fail) - 1)))
            timeline.append(("fail", failed))
            left += refunds[failed].amount
        timeline.append(("make", n))
        left -= made.amount
        if made.fails:
            to_fail.append(n)
    timeline += [("fail", n) for n in to_fail]
    return timeline, refunds


def in_order_and_shuffled(
    amount: int, events: list[PaymentEvent], data: st.DataObject
) -> tuple[OnePayment, OnePayment]:
    """A purchase of 100 credits for ``amount`` given ``events`` in Stripe's order, and one
    given them in a drawn order with some delivered again."""
    natural = OnePayment(100, amount)
    for event in events:
        natural.deliver(event)
    world = OnePayment(100, amount)
    for event in [
        *data.draw(st.permutations(events)),
        *data.draw(st.lists(st.sampled_from(events), max_size=3)),
    ]:
        world.deliver(event)
    return natural, world


PLANNED = st.sampled_from([1, 3, 10]).flatmap(
    lambda unit: st.tuples(st.just(unit), timelines(100 * unit))
)
"""A price of 1, 3 or 10 minor units a credit, and refunds made and failed on 100 credits."""


def refund_figures(world: OnePayment) -> tuple[int, int]:
    """What the account's events clawed back for refunds, and gave back for failed ones."""
    events = world.account.collect_events()
    clawed = sum(e.credits for e in events if isinstance(e, CreditsClawedBack))
    given = sum(e.credits for e in events if isinstance(e, CreditsRestored) and e.refund_id)
    return clawed, given


@settings(max_examples=400, deadline=None)
@given(PLANNED, st.data())
def test_a_failed_refund_gives_back_its_clawback_once_in_any_order(
    planned: tuple[int, tuple[list[tuple[str, int]], list[Made]]], data: st.DataObject
) -> None:
    unit, (timeline, refunds) = planned
    amount = 100 * unit
    events, refunded = stripe_events(amount, timeline, refunds)
    world = OnePayment(100, amount)
    order = data.draw(st.permutations(events))
    for event in [*order, *data.draw(st.lists(st.sampled_from(events), max_size=3))]:
        world.deliver(event)

    assert world.account.topup_balance == kept(100, amount, refunded, 0)
    assert world.session.credits_outstanding == world.account.topup_balance
    assert world.session.amount_refunded == refunded
    assert world.session.status == (REFUNDED if refunded >= amount else PAID)
    clawed, given = refund_figures(world)
    assert 0 <= given <= clawed  # never more given back than was taken


@settings(max_examples=300, deadline=None)
@given(PLANNED, st.data())
def test_without_refund_created_a_failed_refund_never_makes_credits_in_any_order(
    planned: tuple[int, tuple[list[tuple[str, int]], list[Made]]], data: st.DataObject
) -> None:
    """Before API version 2024-10-28 a refund is known by id only once it changes: a refund
    made after another failed is taken back less the failed one (README: refunds), never more
    than refunded, and every order ends the same."""
    unit, (timeline, refunds) = planned
    amount = 100 * unit
    events, refunded = stripe_events(amount, timeline, refunds, created_events=False)
    natural, world = in_order_and_shuffled(amount, events, data)

    assert world.account.topup_balance == natural.account.topup_balance
    assert kept(100, amount, refunded, 0) <= world.account.topup_balance <= 100
    assert world.session.credits_outstanding == world.account.topup_balance
    failed_first = any(
        step == "fail" and any(s == "make" for s, _ in timeline[i + 1 :])
        for i, (step, _) in enumerate(timeline)
    )
    if not failed_first:
        assert world.account.topup_balance == kept(100, amount, refunded, 0)
    clawed, given = refund_figures(world)
    assert 0 <= given <= clawed


def test_a_refund_that_fails_after_its_clawback_gives_the_credits_back() -> None:
    """The bug: the largest ``amount_refunded`` kept, the customer stayed clawed back."""
    world = OnePayment(100, 1000)
    world.deliver(payment(1000))
    world.deliver(RefundEvent(event_id="evt_1", payment_intent="pi_1", amount_refunded=400))
    assert world.account.topup_balance == 60
    world.deliver(refund_update("evt_2", 1, 400, "failed"))
    assert world.account.topup_balance == 100
    world.deliver(refund_update("evt_3", 1, 400, "failed"))  # refund.failed after it
    world.deliver(refund_update("evt_4", 1, 400, "succeeded"))  # an older status, late
    world.deliver(RefundEvent(event_id="evt_1", payment_intent="pi_1", amount_refunded=400))
    assert world.account.topup_balance == 100
    assert refund_figures(world) == (40, 40)
    assert world.session.status == PAID


def test_the_failure_first_takes_nothing_back() -> None:
    world = OnePayment(100, 1000)
    world.deliver(payment(1000))
    world.deliver(refund_update("evt_2", 1, 1000, "failed"))
    world.deliver(RefundEvent(event_id="evt_1", payment_intent="pi_1", amount_refunded=1000))
    assert world.account.topup_balance == 100
    assert refund_figures(world) == (0, 0)
    assert (world.session.status, world.session.amount_refunded) == (PAID, 0)


def test_a_failure_before_the_payment_is_kept_and_applied_with_it() -> None:
    world = OnePayment(100, 1000)
    world.deliver(RefundEvent(event_id="evt_1", payment_intent="pi_1", amount_refunded=400))
    world.deliver(refund_update("evt_2", 1, 400, "failed"))
    assert world.intent is not None
    assert world.intent.refunds == {"re_1": Refund("failed", 400)}
    world.deliver(payment(1000))
    assert world.account.topup_balance == 100
    assert refund_figures(world) == (0, 0)


def test_a_refund_failing_restores_what_a_lost_chargeback_then_holds() -> None:
    """Refunded 400, then a lost chargeback of the other 600: all 100 credits back. The
    refund fails: Stripe holds the 400 again, the chargeback's 600 stays withdrawn."""
    checkout = paid(100, 1000)
    checkout.refund(400)
    checkout.dispute("dp_1", "lost", 600)
    assert checkout.credits_outstanding == 0
    change = checkout.update_refund("re_1", 400, "failed")
    assert (change.given_back, change.reversed, change.restored) == (40, 0, 0)
    assert checkout.credits_outstanding == 40


def test_the_money_refunded_is_never_more_than_a_figure_or_the_live_refunds_say() -> None:
    failed, live = Refund("failed", 400), Refund("succeeded", 300)
    assert refunded_money(400, {"re_1": failed}) == 0  # the figure from before the failure
    assert refunded_money(300, {"re_1": failed, "re_2": live}) == 300  # from after it
    assert refunded_money(700, {"re_1": failed}) == 300
    assert refunded_money(0, {"re_2": live}) == 300  # refund.created before charge.refunded
    assert refunded_money(400, {"re_1": Refund("canceled", 400)}) == 0


def test_snapshots_from_before_refunds_were_known_by_id_load() -> None:
    checkout = paid(100, 1000)
    checkout.refund(400)
    checkout.update_refund("re_1", 400, "succeeded")
    loaded = loaded_from_an_older_snapshot(checkout, 2, ("largest_refunded", "refunds"))
    assert isinstance(loaded, CheckoutSession)
    assert (loaded.largest_refunded, loaded.refunds, loaded.amount_refunded) == (400, {}, 400)
    assert loaded.update_refund("re_1", 400, "failed").given_back == 40
    current = loaded_from_an_older_snapshot(checkout, 3, ())
    assert isinstance(current, CheckoutSession)
    assert current.refunds == {"re_1": Refund("succeeded", 400)}

    intent = PaymentIntent.record("pi_1")
    intent.hold_refund_update("re_1", 400, "failed")
    old_intent = loaded_from_an_older_snapshot(intent, 1, ("refunds",))
    assert isinstance(old_intent, PaymentIntent)
    assert old_intent.refunds == {}
    again = loaded_from_an_older_snapshot(intent, 2, ())
    assert isinstance(again, PaymentIntent)
    assert again.refunds == {"re_1": Refund("failed", 400)}


REFUND = {
    "id": "re_1",
    "object": "refund",
    "amount": 400,
    "charge": "ch_1",
    "payment_intent": "pi_1",
    "status": "failed",
    "failure_reason": "expired_or_canceled_card",
}


@pytest.mark.parametrize(
    "kind", ["charge.refund.updated", "refund.created", "refund.updated", "refund.failed"]
)
def test_every_refund_event_is_read_as_the_refund_it_carries(kind: str) -> None:
    body = {"id": "evt_1", "type": kind, "data": {"object": REFUND}}
    _, meaning = parse_event(json.dumps(body).encode())

    assert meaning == RefundUpdate(
        event_id="evt_1", refund_id="re_1", payment_intent="pi_1", amount=400, status="failed"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"amount": -400},
        {"amount": None},
        {"amount": 400.5},
        {"amount": "4e2"},
        {"amount": True},
        {"amount": [400]},
        {"payment_intent": None},
        {"payment_intent": 7},
        {"status": ""},
        {"status": 2},
        {"id": None},
        {"id": 7},
        {"id": ["re_1"]},
    ],
)
def test_a_refund_without_its_id_intent_status_or_amount_means_nothing(
    change: dict[str, object],
) -> None:
    body = {"id": "evt_1", "type": "refund.failed", "data": {"object": REFUND | change}}
    _, meaning = parse_event(json.dumps(body).encode())

    assert meaning is None


def test_a_refund_with_no_amount_field_means_nothing() -> None:
    refund = {key: value for key, value in REFUND.items() if key != "amount"}
    body = {"id": "evt_1", "type": "refund.updated", "data": {"object": refund}}
    _, meaning = parse_event(json.dumps(body).encode())

    assert meaning is None


def test_a_refund_status_stripe_does_not_send_changes_nothing() -> None:
    body = {"id": "evt_2", "type": "refund.updated", "data": {"object": REFUND | {"status": "x"}}}
    _, meaning = parse_event(json.dumps(body).encode())
    assert isinstance(meaning, RefundUpdate)

    before = OnePayment(100, 1000)
    before.deliver(meaning)
    assert before.intent is not None
    assert before.intent.refunds == {}
    world = OnePayment(100, 1000)
    world.deliver(payment(1000))
    world.deliver(RefundEvent(event_id="evt_1", payment_intent="pi_1", amount_refunded=400))
    world.deliver(meaning)
    assert world.session.refunds == {}
    assert world.account.topup_balance == 60
