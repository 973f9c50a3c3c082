"""A rebuild's batch decoded (projections/events.replayed_projected): as ``projected``
decodes each event, with the events of a stream sharing one id object."""

from __future__ import annotations

import gc
import random
import uuid

import msgspec
from asyncpg.pgproto.pgproto import UUID as ReadUUID

from audit.replay_state import AuditedEvent
from bench.generate import account_story
from ledger.domain.events import CreditsSpent
from ledger.store.event_store import ReplayedEvent
from ledger.store.mapper import MsgspecMapper
from projections.balance_changes import moved_by
from projections.events import Unrecognised, projected, replayed_projected
from tests.support.typed_events import made

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
        )
        for n, event in enumerate(stored)
    ]


def test_a_stream_s_events_share_one_id_object_and_decode_as_projected_does() -> None:
    stored, _, _ = account_story(1, MsgspecMapper(), random.Random(1))
    other, _, _ = account_story(2, MsgspecMapper(), random.Random(2))
    events = as_read(stored[:5]) + as_read(other[:3], 6) + as_read(stored[5:8], 9)
    unknown = ReplayedEvent(ReadUUID(str(stored[0].originator_id)), 9, "x:Y", b"{}", 12, START)
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


def test_a_spend_moves_the_buckets_as_moved_by_says_with_grants_or_without() -> None:
    # replayed_projected writes moves._spent out for spends (nearly every event).
    stream = uuid.uuid4()
    spends = [
        made(CreditsSpent, stream, 2, amount=9, from_allowance=4, from_topup=2, reason="",
             from_grants=grants)
        for grants in ({}, {"grant_1": 2, "grant_2": 1})
    ]  # fmt: skip
    mapper = MsgspecMapper()

    decoded = replayed_projected(as_read([mapper.to_stored_event(s) for s in spends]))

    assert [d.moved for d in decoded] == [moved_by(s, 0) for s in spends]
    assert [d.moved for d in decoded] == [(-4, -2, 0), (-4, -2, -3)]


def test_replayed_events_are_left_out_of_the_garbage_collectors_work() -> None:
    # A replay makes one an event (millions); asyncpg's UUID in it is tracked, so by default
    # it would be too, though it refers to nothing that could refer back to it.
    spent = made(CreditsSpent, uuid.uuid4(), 1, amount=1, from_allowance=1, from_topup=0, reason="")
    read = as_read([MsgspecMapper().to_stored_event(spent)])
    chained = AuditedEvent(*msgspec.structs.astuple(read[0]), b"hash")

    assert gc.is_tracked(read[0].originator_id)
    assert not gc.is_tracked(read[0])
    assert not gc.is_tracked(chained)
