"""A Stripe event holding an escaped NUL is refused (PostgreSQL text cannot hold one);
a backslash before ``u0000`` is text and is not (ledger/adapters/stripe_webhooks.py)."""

from __future__ import annotations

import json

import pytest

from ledger.adapters.stripe_webhooks import InvalidWebhook, parse_event
from ledger.payment_events import CheckoutEvent


def event(name: str) -> bytes:
    """A paid Checkout whose customer's name is ``name``, as Stripe encodes JSON."""
    body = {
        "id": "evt_nul",
        "type": "checkout.session.completed",
        "data": {
            "object": {
                "id": "cs_nul",
                "payment_status": "paid",
                "customer_details": {"name": name},
                "metadata": {"account_id": "acct_1", "credits": "100"},
            }
        },
    }
    return json.dumps(body).encode()


@pytest.mark.parametrize("name", ["a\u0000b", "\\\u0000", "\\\\\\\u0000", "\u0000"])
def test_an_escaped_nul_anywhere_is_refused(name: str) -> None:
    payload = event(name)
    assert b"\\u0000" in payload

    with pytest.raises(InvalidWebhook, match="NUL"):
        parse_event(payload)


@pytest.mark.parametrize("name", ["\\u0000", "\\\\u0000", "u0000", "Zoë \\ u0000"])
def test_a_backslash_written_before_u0000_is_text_and_taken(name: str) -> None:
    payload = event(name)

    envelope, meaning = parse_event(payload)

    assert envelope.id == "evt_nul"
    assert isinstance(meaning, CheckoutEvent)
    assert (meaning.session_id, meaning.credits, meaning.paid) == ("cs_nul", 100, True)
