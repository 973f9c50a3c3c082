"""A rebuild's batch decoded (projections/events.replayed_projected): as ``projected``
decodes each event, with the events of a stream sharing one id object."""

from __future__ import annotations

import random

from asyncpg.pgproto.pgproto import UUID as ReadUUID

from bench.generate import account_story
from ledger.store.event_store import ReplayedEvent
from ledger.store.mapper import MsgspecMapper
from projections.events import Unrecognised, projected, replayed_projected

START = 849_398_400_000_000
"""2026-12-01 as PostgreSQL keeps it: microseconds since 2000, as a rebuild reads times."""


def as_read(stored: list, first: int = 1) -> list[ReplayedEvent]:
    """Events as asyncpg reads them: each row's id a UUID object of its own."""
    return [
        ReplayedEvent(
            ReadUUID(str(event.originator_id)),
            event.originator_version,
            event.topic,
            event.state,
            first + n,
            START + n,
            b"",
        )
        for n, event in enumerate(stored)
    ]


def test_a_stream_s_events_share_one_id_object_and_decode_as_projected_does() -> None:
    stored, _, _ = account_story(1, MsgspecMapper(), random.Random(1))
    other, _, _ = account_story(2, MsgspecMapper(), random.Random(2))
    events = as_read(stored[:5]) + as_read(other[:3], 6) + as_read(stored[5:8], 9)
    unknown = ReplayedEvent(ReadUUID(str(stored[0].originator_id)), 9, "x:Y", b"{}", 12, START, b"")
    events.append(unknown)

    decoded = replayed_projected(events)

    assert decoded == [projected(e) for e in events]
    assert decoded[-1].event == Unrecognised("x:Y")
    mine = [d.stream_id for d in decoded if d.stream_id == events[0].originator_id]
    assert len(mine) == 9
    assert all(stream_id is events[0].originator_id for stream_id in mine)
    assert decoded[5].stream_id is events[5].originator_id
    assert decoded[7].stream_id is decoded[5].stream_id
    assert events[8].originator_id is not events[0].originator_id  # read apart, shared after
