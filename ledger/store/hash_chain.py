"""The per-stream hash chain, recomputed in Python exactly as ``event_hash()`` does in SQL."""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime, timedelta
from functools import cache
from uuid import UUID

GENESIS = bytes(32)
"""The "previous hash" of every stream's first event."""

_POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_FIXED_FIELDS = struct.Struct(">16sqq")
"""The stream id, the version and the microseconds since 2000."""
pack_fixed_fields = _FIXED_FIELDS.pack
"""The fixed-width fields as hashed, from the id's 16 bytes: for ``audit verify``'s replay,
which writes ``event_hash_at`` out with each stream's id bytes made once."""


def postgres_microseconds(moment: datetime) -> int:
    """A moment as PostgreSQL stores a ``timestamptz``: microseconds since 2000 (UTC)."""
    delta = moment - _POSTGRES_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def postgres_moment(microseconds: int) -> datetime:
    """``postgres_microseconds`` undone; PostgreSQL's infinities (and anything past what a
    datetime holds) as datetime's own ends, as asyncpg reads them."""
    try:
        return _POSTGRES_EPOCH + timedelta(microseconds=microseconds)
    except OverflowError:
        if microseconds > 0:
            return datetime.max.replace(tzinfo=UTC)
        return datetime.min.replace(tzinfo=UTC)


@cache
def length_prefixed(topic: str) -> bytes:
    """A topic (or an event type's name) as it is hashed: its UTF-8 after its length; a
    store has a few dozen, and a replay hashes each often."""
    encoded = topic.encode()
    return len(encoded).to_bytes(4, "big", signed=True) + encoded


def event_hash(
    previous: bytes,
    originator_id: UUID,
    originator_version: int,
    recorded_at: datetime,
    topic: str,
    state: bytes,
) -> bytes:
    """sha256 over the previous hash and the event's fixed-width, length-prefixed fields."""
    return event_hash_at(
        previous,
        originator_id,
        originator_version,
        postgres_microseconds(recorded_at),
        topic,
        state,
    )


def event_hash_at(
    previous: bytes,
    originator_id: UUID,
    originator_version: int,
    microseconds: int,
    topic: str,
    state: bytes,
) -> bytes:
    """``event_hash`` of an event recorded ``microseconds`` after 2000
    (``postgres_microseconds``)."""
    fixed = _FIXED_FIELDS.pack(originator_id.bytes, originator_version, microseconds)
    return hashlib.sha256(b"".join((previous, fixed, length_prefixed(topic), state))).digest()
