"""What a consumer receives: one JetStream message per stored event."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from ledger.store.event_store import RecordedEvent
from ledger.store.mapper import event_type_name

MSG_ID_HEADER = "Nats-Msg-Id"
"""JetStream drops a message whose id it has seen within the stream's duplicate window."""


class RelayedEvent(msgspec.Struct, frozen=True):
    """The JSON body of a message (the contract in docs/relay.md)."""

    position: int
    """The event's global position in the store: gapless order, the consumer's cursor."""
    stream_id: UUID
    version: int
    type: str
    recorded_at: datetime
    data: msgspec.Raw
    """The event's fields, exactly the JSON the store holds."""
    hash: str
    """The event's link in its stream's hash chain, hexadecimal."""


class OutgoingMessage(msgspec.Struct, frozen=True):
    """A message ready to publish."""

    position: int
    subject: str
    body: bytes


_encode = msgspec.json.Encoder().encode
_decode_body = msgspec.json.Decoder(RelayedEvent).decode


def outgoing(event: RecordedEvent, subject_prefix: str) -> OutgoingMessage:
    """The message for one stored event, on ``<prefix>.<Type>``."""
    kind = event_type_name(event.topic)
    body = RelayedEvent(
        position=event.notification_id,
        stream_id=event.originator_id,
        version=event.originator_version,
        type=kind,
        recorded_at=event.recorded_at,
        data=msgspec.Raw(event.state),
        hash=event.hash.hex(),
    )
    return OutgoingMessage(
        position=event.notification_id, subject=f"{subject_prefix}.{kind}", body=_encode(body)
    )


def decode(body: bytes) -> RelayedEvent:
    """A message's body, as a consumer written in Python would read it."""
    return _decode_body(body)
