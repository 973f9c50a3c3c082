"""Stripe's amounts are never below zero: one that is is read as no amount at all
(ledger/adapters/stripe_webhooks.py); and a signature header that is not ASCII is a
refusal, not an error."""

from __future__ import annotations

import json

import pytest

from ledger.adapters.stripe_webhooks import InvalidWebhook, parse_event, verify_signature
from ledger.payment_events import DisputeEvent


def payload(kind: str, obj: dict[str, object]) -> bytes:
    return json.dumps({"id": "evt_1", "type": kind, "data": {"object": obj}}).encode()


@pytest.mark.parametrize("amount", [-500, "-500", -1])
def test_a_dispute_of_a_negative_amount_has_no_amount(amount: object) -> None:
    _, meaning = parse_event(
        payload(
            "charge.dispute.created",
            {"id": "dp_1", "payment_intent": "pi_1", "status": "needs_response", "amount": amount},
        )
    )

    assert isinstance(meaning, DisputeEvent)
    assert meaning.amount is None


def test_a_refund_of_a_negative_amount_is_no_refund() -> None:
    _, meaning = parse_event(
        payload("charge.refunded", {"payment_intent": "pi_1", "amount_refunded": -5})
    )

    assert meaning is None


@pytest.mark.parametrize("header", ["t=1,v1=é", "t=²,v1=abc", "t=1,v1=\u00a0"])
def test_a_signature_header_that_is_not_ascii_is_refused(header: str) -> None:
    with pytest.raises(InvalidWebhook, match="not ASCII"):
        verify_signature(b"{}", header, ["whsec_test"])
