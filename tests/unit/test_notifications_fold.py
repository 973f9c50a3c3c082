"""What each event means to the alerts, without a database: the notifications view's fold."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from eventsourcing.domain import Aggregate

from ledger.domain.events import (
    AccountOpened,
    CheckoutRequested,
    CreditsClawedBack,
    CreditsGranted,
    CreditsPurchased,
    CreditsRestored,
    CreditsSpent,
    GrantExpired,
    HoldCaptured,
    HoldPlaced,
    MonthlyAllowanceReset,
    PaymentIntentRecorded,
)
from projections.notifications import NotifierState, fold, notification_id
from tests.support.typed_events import made, projected_in_order

STREAM = uuid.uuid4()


def run(*events: Aggregate.Event) -> tuple[NotifierState | None, list[list[str]]]:
    state: NotifierState | None = None
    sent = []
    for event in projected_in_order(STREAM, list(events)):
        state, notifications = fold(state, event)
        sent.append([n.type for n in notifications])
    return state, sent


OPEN = made(AccountOpened, account_id="acct_1", monthly_allowance=1000, period="2030-01")


def spent(amount: int, from_topup: int = 0) -> CreditsSpent:
    return made(
        CreditsSpent,
        amount=amount,
        from_allowance=amount - from_topup,
        from_topup=from_topup,
        reason="x",
    )


def test_an_account_that_opens_empty_sends_no_alert_until_it_has_had_credits() -> None:
    state, sent = run(
        made(AccountOpened, account_id="a", monthly_allowance=0, period="2030-01"),
        made(CreditsPurchased, session_id="cs_1", credits=5),
        spent(5, from_topup=5),
    )
    assert sent == [[], ["credits.purchased"], ["credits.spent", "credits.depleted"]]
    assert state is not None
    assert state.available == 0


def test_a_reset_rearms_the_alerts_and_keeps_what_holds_carry() -> None:
    state, sent = run(
        OPEN,
        made(
            HoldPlaced,
            hold_id="h",
            amount=950,
            from_allowance=950,
            from_topup=0,
            reason="r",
            expires_at="2030-01-02T00:00:00+00:00",
        ),
        made(
            MonthlyAllowanceReset,
            period="2030-02",
            monthly_allowance=500,
            held_allowance_carried=950,
        ),
        made(
            HoldCaptured,
            hold_id="h",
            captured=900,
            from_allowance=900,
            from_topup=0,
            released=50,
            lapsed=50,
        ),
        spent(460),
    )
    assert sent == [
        [],
        ["credits.low_balance"],
        [],
        ["credits.spent"],
        ["credits.spent", "credits.low_balance"],
    ]
    assert state is not None
    assert (state.allowance_remaining, state.held, state.effective_threshold) == (40, 0, 50)


def test_notification_ids_are_the_same_for_the_same_event() -> None:
    assert notification_id(42, "credits.low_balance") == "evt_42_credits_low_balance"
    assert notification_id(42, "credits.spent") != notification_id(43, "credits.spent")


def test_events_of_other_streams_are_ignored() -> None:
    state, sent = run(
        made(
            CheckoutRequested,
            session_id="cs_1",
            account_id="acct_1",
            credits=1,
            amount=1,
            currency="usd",
            checkout_url="https://checkout.invalid",
            expires_at=0,
            recovered=False,
        ),
        made(PaymentIntentRecorded, payment_intent="pi_1", session_id="cs_1"),
    )
    assert state is None
    assert sent == [[], []]


def test_grants_notify_and_count_in_available_for_the_alerts() -> None:
    state, sent = run(
        made(AccountOpened, account_id="a", monthly_allowance=100, period="2030-01"),
        made(
            CreditsGranted,
            grant_id="g",
            amount=500,
            priority=50,
            expires_at="2030-01-31T00:00:00+00:00",
            reason="promo",
        ),
        made(
            CreditsSpent,
            amount=150,
            from_allowance=100,
            from_topup=0,
            reason="x",
            from_grants={"g": 50},
        ),
        made(GrantExpired, grant_id="g", lapsed=450),
    )

    # 450 of the grant keep available above the threshold (10) after the spend; its
    # expiry empties the account.
    assert sent == [
        [],
        ["credits.granted"],
        ["credits.spent"],
        ["grant.expired", "credits.low_balance", "credits.depleted"],
    ]
    assert state is not None
    assert (state.granted, state.available) == (0, 0)


def test_the_alerts_judge_what_a_command_left_not_the_events_inside_it() -> None:
    """A refund that arrives during a chargeback claws back and restores in one command:
    the balance never moved, so nothing crossed."""
    opened = made(AccountOpened, account_id="a", monthly_allowance=100, period="2030-01")
    bought = made(CreditsPurchased, session_id="cs_1", credits=500)
    clawed = made(CreditsClawedBack, session_id="cs_1", credits=590)
    restored = made(CreditsRestored, session_id="cs_1", dispute_id="dp_1", credits=590)
    state: NotifierState | None = None
    sent: list[str] = []
    events = projected_in_order(STREAM, [opened, bought, clawed, restored])
    for event, ends_command in zip(events, [True, True, False, True], strict=True):
        state, notifications = fold(state, event, ends_command=ends_command)
        sent += [n.type for n in notifications]

    assert sent == ["credits.purchased"]
    assert state is not None
    assert (state.available, state.low_armed, state.depleted_armed) == (600, True, True)


def test_the_documented_delivery_carries_every_balance_a_notification_does() -> None:
    """docs/notifications.md's example delivery, field for field."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "notifications.md").read_text()
    example = re.search(r"^(\{\"id\":\"evt_.*?\}\})$", doc, re.M | re.S)
    assert example, "docs/notifications.md no longer shows a delivery's body"
    state, _ = run(OPEN, spent(910))
    assert state is not None

    assert list(json.loads(example[1])["data"]) == list(state.balances())


def test_a_grant_s_expiry_is_notified_in_utc_as_the_api_answers_it() -> None:
    """`credits.granted` carried the offset the grant was given ("+01:00") while the grant's
    answer and the grants list give the same instant in UTC with a "Z"."""
    events = [
        made(AccountOpened, account_id="a", monthly_allowance=100, period="2030-01"),
        made(
            CreditsGranted,
            grant_id="g",
            amount=5,
            priority=50,
            expires_at="2030-01-01T00:00:00+01:00",
            reason="",
        ),
    ]
    state: NotifierState | None = None
    sent = []
    for event in projected_in_order(STREAM, events):
        state, notifications = fold(state, event)
        sent.extend(notifications)

    assert [(n.type, n.data["expires_at"]) for n in sent] == [
        ("credits.granted", "2029-12-31T23:00:00Z")
    ]
