"""What each event means to the alerts, without a database: the notifications view's fold."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from projections.events import ProjectedEvent
from projections.notifications import NotifierState, fold, notification_id

STREAM = uuid.uuid4()


def run(*events: tuple[str, dict[str, Any]]) -> tuple[NotifierState | None, list[list[str]]]:
    state: NotifierState | None = None
    made = []
    for position, (kind, data) in enumerate(events, start=1):
        event = ProjectedEvent(position, STREAM, position, kind, data, datetime.now(UTC))
        state, notifications = fold(state, event)
        made.append([n.type for n in notifications])
    return state, made


OPEN = ("AccountOpened", {"account_id": "acct_1", "monthly_allowance": 1000, "period": "2030-01"})


def spent(amount: int, from_topup: int = 0) -> tuple[str, dict[str, Any]]:
    data = {"amount": amount, "from_allowance": amount - from_topup, "from_topup": from_topup}
    return "CreditsSpent", data | {"reason": "x"}


def test_an_account_that_opens_empty_sends_no_alert_until_it_has_had_credits() -> None:
    state, made = run(
        ("AccountOpened", {"account_id": "a", "monthly_allowance": 0, "period": "2030-01"}),
        ("CreditsPurchased", {"session_id": "cs_1", "credits": 5}),
        spent(5, from_topup=5),
    )
    assert made == [[], ["credits.purchased"], ["credits.spent", "credits.depleted"]]
    assert state is not None
    assert state.available == 0


def test_a_reset_rearms_the_alerts_and_keeps_what_holds_carry() -> None:
    state, made = run(
        OPEN,
        (
            "HoldPlaced",
            {
                "hold_id": "h",
                "amount": 950,
                "from_allowance": 950,
                "from_topup": 0,
                "reason": "r",
                "expires_at": "2030-01-02T00:00:00+00:00",
            },
        ),
        (
            "MonthlyAllowanceReset",
            {"period": "2030-02", "monthly_allowance": 500, "held_allowance_carried": 950},
        ),
        (
            "HoldCaptured",
            {
                "hold_id": "h",
                "captured": 900,
                "from_allowance": 900,
                "from_topup": 0,
                "released": 50,
                "lapsed": 50,
            },
        ),
        spent(460),
    )
    assert made == [
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
    state, made = run(("CheckoutRequested", {"session_id": "cs_1"}))
    assert state is None
    assert made == [[]]
