"""A verified event of a type the ledger does not act on is answered 200 whatever its
``data`` holds (the contract: "200 for every verified event, handled or not"); one the
ledger acts on still needs its ``data.object`` (ledger/adapters/stripe_webhooks.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ledger.adapters.stripe_webhooks import InvalidWebhook, parse_event

ABSENT = object()


def event(event_type: str, data: Any) -> bytes:
    body: dict[str, Any] = {"id": "evt_shape", "object": "event", "type": event_type}
    if data is not ABSENT:
        body["data"] = data
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    "data", [ABSENT, None, {}, [], "x", {"object": None}, {"object": 5}, {"object": {"id": 5}}]
)
def test_an_unhandled_type_is_taken_whatever_its_data(data: Any) -> None:
    envelope, meaning = parse_event(event("customer.created", data))

    assert (envelope.id, envelope.type, meaning) == ("evt_shape", "customer.created", None)


@pytest.mark.parametrize(
    "event_type",
    ["checkout.session.completed", "charge.refunded", "charge.dispute.created"],
)
@pytest.mark.parametrize(
    "data", [ABSENT, None, {}, {"object": None}, [], "x", {"object": "x"}, {"object": [{}]}]
)
def test_a_handled_type_without_its_object_is_still_refused(event_type: str, data: Any) -> None:
    with pytest.raises(InvalidWebhook):
        parse_event(event(event_type, data))
