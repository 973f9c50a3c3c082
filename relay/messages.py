"""What a consumer receives: one JetStream message per stored event."""

from __future__ import annotations

import re
from datetime import datetime
from uuid import UUID

import msgspec

from ledger.store.event_store import RecordedEvent
from ledger.store.mapper import event_type_name, stored_object

MSG_ID_HEADER = "Nats-Msg-Id"
"""JetStream drops a message whose id it has seen within the stream's duplicate window."""


class RelayedEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """The JSON body of a message (the contract in docs/relay.md)."""

    position: int
    """The event's global position in the store: gapless order, the consumer's cursor."""
    stream_id: UUID
    version: int
    type: str
    recorded_at: datetime
    data: msgspec.Raw
    """The event's fields, exactly the JSON the store holds (null: not a JSON object)."""
    hash: str
    """The event's link in its stream's hash chain, hexadecimal."""
    unreadable: str | None = None
    """Why ``data`` is null: a row written by hand, as ``GET /v1/events`` says it."""


class OutgoingMessage(msgspec.Struct, frozen=True):
    """A message ready to publish."""

    position: int
    subject: str
    body: bytes


_encode = msgspec.json.Encoder().encode
_decode_body = msgspec.json.Decoder(RelayedEvent).decode
_shape = msgspec.json.Decoder(msgspec.Raw).decode


def _raw(state: bytes) -> msgspec.Raw:
    """The JSON as it is, its shape checked (~0.2 µs) and its UTF-8 (which the Raw decoder
    leaves unread in strings: such a body no consumer could decode)."""
    raw = _shape(state)
    state.decode()
    return raw


_NULL = msgspec.Raw(b"null")


def _stored_data(state: bytes) -> tuple[msgspec.Raw, str | None]:
    """The stored JSON object as it is, or null and why it is not one: relayed as it was,
    a truncated or non-JSON state made a body no consumer could parse."""
    raw, unreadable = stored_object(state, _raw)
    return (_NULL if raw is None else raw), unreadable


def _subject_token(kind: str) -> str:
    """``kind`` as one token of a subject: a type no class of this code has (a row written by
    hand: "Foo Bar", "*") made an invalid subject, which the relay took for NATS being
    unavailable and retried for good, holding every event after it."""
    if _TOKEN.fullmatch(kind):
        return kind
    return _NOT_TOKEN.sub("_", kind) or "_"


_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


def outgoing(event: RecordedEvent, subject_prefix: str) -> OutgoingMessage:
    """The message for one stored event, on ``<prefix>.<Type>``."""
    kind = event_type_name(event.topic)
    data, unreadable = _stored_data(event.state)
    body = RelayedEvent(
        position=event.notification_id,
        stream_id=event.originator_id,
        version=event.originator_version,
        type=kind,
        recorded_at=event.recorded_at,
        data=data,
        hash=event.hash.hex(),
        unreadable=unreadable,
    )
    return OutgoingMessage(
        position=event.notification_id,
        subject=f"{subject_prefix}.{_subject_token(kind)}",
        body=_encode(body),
    )


def decode(body: bytes) -> RelayedEvent:
    """A message's body, as a consumer written in Python would read it."""
    return _decode_body(body)
