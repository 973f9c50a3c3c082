"""The per-stream hash chain, recomputed in Python exactly as ``event_hash()`` does in SQL."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from uuid import UUID

GENESIS = bytes(32)
"""The "previous hash" of every stream's first event."""

_POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _postgres_microseconds(moment: datetime) -> int:
    delta = moment - _POSTGRES_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def event_hash(
    previous: bytes,
    originator_id: UUID,
    originator_version: int,
    recorded_at: datetime,
    topic: str,
    state: bytes,
) -> bytes:
    """sha256 over the previous hash and the event's fixed-width, length-prefixed fields."""
    topic_bytes = topic.encode()
    return hashlib.sha256(
        previous
        + originator_id.bytes
        + originator_version.to_bytes(8, "big", signed=True)
        + _postgres_microseconds(recorded_at).to_bytes(8, "big", signed=True)
        + len(topic_bytes).to_bytes(4, "big", signed=True)
        + topic_bytes
        + state
    ).digest()
