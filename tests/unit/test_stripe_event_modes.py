"""A Stripe event of the other mode than the service's key, or of a connected account, means
nothing to the ledger (ledger/adapters/stripe_webhooks.py); reconciliation's, which say no
mode, and the key's own mode's do."""

from __future__ import annotations

import json

import pytest

from api.settings import Settings
from ledger.adapters.stripe_webhooks import parse_event
from ledger.payment_events import RefundEvent


def refund(**envelope: object) -> bytes:
    obj = {"payment_intent": "pi_1", "amount_refunded": 500}
    return json.dumps(
        {"id": "evt_1", "type": "charge.refunded", "data": {"object": obj}} | envelope
    ).encode()


@pytest.mark.parametrize(
    ("envelope", "service_live", "applies"),
    [
        ({"livemode": True}, True, True),
        ({"livemode": False}, False, True),
        ({"livemode": False}, True, False),
        ({"livemode": True}, False, False),
        ({}, True, True),  # reconciliation's events say no mode
        ({"livemode": "yes"}, True, True),  # not Stripe's: the signature vouched for it
        ({"livemode": True, "account": "acct_1Other"}, True, False),
        ({"account": None}, False, True),
    ],
)
def test_only_the_services_own_mode_and_account_apply(
    envelope: dict[str, object], service_live: bool, applies: bool
) -> None:
    _, meaning = parse_event(refund(**envelope), livemode=service_live)

    assert isinstance(meaning, RefundEvent) is applies


@pytest.mark.parametrize(
    ("key", "live"),
    [("sk_live_abc", True), ("rk_live_abc", True), ("sk_test_abc", False), (None, False)],
)
def test_the_services_mode_is_its_keys(key: str | None, live: bool) -> None:
    assert Settings(stripe_secret_key=key).stripe_livemode is live
