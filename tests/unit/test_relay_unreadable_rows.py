"""A stored row whose state is not a JSON object (written by hand) is relayed with ``data``
null and ``unreadable`` saying why, as ``GET /v1/events`` shows it: relayed as stored, a
truncated state made a message body no consumer could parse."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from ledger.store.event_store import RecordedEvent
from relay.messages import decode, outgoing


def _recorded(state: bytes) -> RecordedEvent:
    return RecordedEvent(
        originator_id=uuid.uuid4(),
        originator_version=2,
        topic="ledger.domain.events:CreditsSpent",
        state=state,
        notification_id=7,
        recorded_at=datetime(2026, 12, 5, tzinfo=UTC),
        hash=bytes(32),
    )


@pytest.mark.parametrize(
    ("state", "why"),
    [
        (b'{"amount": 1', "the stored state is not JSON: Input data was truncated"),
        (b"\xff\xfe", "the stored state is not JSON: JSON is malformed: invalid character"),
        (b"[1, 2]", "the stored state is not a JSON object: it is an array"),
        (b" 12", "the stored state is not a JSON object: it is a number"),
        # JSON in shape, but a body no consumer can read as UTF-8
        (b'{"reason": "\xff"}', "the stored state is not JSON: 'utf-8' codec can't decode"),
    ],
)
def test_a_state_that_is_not_a_json_object_is_relayed_as_unreadable(state: bytes, why: str) -> None:
    message = outgoing(_recorded(state), "ledger.events")

    body = json.loads(message.body)  # a body every consumer can parse
    assert body["data"] is None
    assert body["unreadable"].startswith(why), body["unreadable"]
    assert body["position"] == 7
    assert message.subject == "ledger.events.CreditsSpent"


def test_a_readable_state_is_relayed_as_stored_without_the_field() -> None:
    message = outgoing(_recorded(b'{"amount": 40, "reason": "api call"}'), "ledger.events")

    body = json.loads(message.body)
    assert body["data"] == {"amount": 40, "reason": "api call"}
    assert "unreadable" not in body
    assert decode(message.body).unreadable is None


@pytest.mark.parametrize(
    ("topic", "subject", "kind"),
    [
        ("elsewhere:Foo Bar", "ledger.events.Foo_Bar", "Foo Bar"),
        ("elsewhere:*", "ledger.events._", "*"),
        ("elsewhere:", "ledger.events._", ""),
        ("ledger.domain.events:CreditsSpent", "ledger.events.CreditsSpent", "CreditsSpent"),
    ],
)
def test_a_type_that_is_no_subject_token_goes_on_a_valid_subject(
    topic: str, subject: str, kind: str
) -> None:
    """A topic written by hand ("Foo Bar") made an invalid subject: the relay took NATS's
    BadSubjectError for NATS being away and held at that event for good."""
    recorded = msgspec.structs.replace(_recorded(b"{}"), topic=topic)

    message = outgoing(recorded, "ledger.events")

    assert message.subject == subject
    assert json.loads(message.body)["type"] == kind
