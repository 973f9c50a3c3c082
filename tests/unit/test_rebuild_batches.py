"""How a rebuild worker cuts its part of the streams into batches
(projections/rebuild_parts._whole_commands): never inside one append's events, as the
store's readers of the whole store cut (ledger/store/event_store.same_append)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import pairwise
from uuid import UUID, uuid4

from ledger.store.event_store import ReplayedEvent, same_append
from projections.rebuild_parts import _whole_commands

START = 849_398_400_000_000
"""2026-12-01 as PostgreSQL keeps it: microseconds since 2000, as a worker reads times."""


def commands(sizes: list[int]) -> list[ReplayedEvent]:
    """Events of commands of these sizes, each command on a stream, at a moment, of its own."""
    events: list[ReplayedEvent] = []
    for number, size in enumerate(sizes):
        stream: UUID = uuid4()
        for version in range(1, size + 1):
            events.append(
                ReplayedEvent(
                    stream,
                    version,
                    "t",
                    b"{}",
                    len(events) + 1,
                    START + number * 1_000_000,
                )
            )
    return events


async def in_chunks(events: list[ReplayedEvent], size: int) -> AsyncIterator[list[ReplayedEvent]]:
    for start in range(0, len(events), size):
        yield events[start : start + size]


async def batches_of(events: list[ReplayedEvent], chunk: int, batch: int) -> list[list[int]]:
    return [
        [e.notification_id for e in found]
        async for found in _whole_commands(in_chunks(events, chunk), batch)
    ]


async def test_batches_end_only_where_a_command_ends_and_lose_nothing() -> None:
    events = commands([1, 3, 2, 5, 1, 1, 4, 2])
    ends = {
        e.notification_id for e, after in pairwise(events) if after.microseconds != e.microseconds
    }

    for chunk, batch in ((1, 2), (3, 4), (4, 3), (19, 5)):
        found = await batches_of(events, chunk, batch)
        assert [n for b in found for n in b] == [e.notification_id for e in events]
        assert all(b[-1] in ends for b in found[:-1]), (chunk, batch, found)
        assert len(found) > 1


async def test_a_command_longer_than_a_batch_stays_in_one_batch() -> None:
    events = commands([2, 9, 1])
    found = await batches_of(events, 2, 3)
    assert [n for b in found for n in b] == list(range(1, 13))
    [holding] = [b for b in found if 3 in b]
    assert set(range(3, 12)) <= set(holding)


def event(stream: UUID, version: int, position: int, seconds: int) -> ReplayedEvent:
    return ReplayedEvent(stream, version, "t", b"{}", position, START + seconds * 1_000_000)


async def test_an_append_over_two_streams_of_the_part_stays_in_one_batch() -> None:
    """A fulfilment writes the session's and the account's events in one append: when both
    streams are the part's, it sees them one after another at one moment."""
    session, account, other = uuid4(), uuid4(), uuid4()
    events = [
        event(other, 1, 1, 0),
        event(session, 1, 2, 1),
        event(account, 1, 3, 1),
        event(other, 2, 4, 2),
    ]
    found = await batches_of(events, 1, 2)
    assert [n for b in found for n in b] == [1, 2, 3, 4]
    [holding] = [b for b in found if 2 in b]
    assert 3 in holding


def test_same_append_in_the_whole_store_and_in_a_part() -> None:
    first, second = uuid4(), uuid4()
    # The whole store: an append's events follow one another, whatever their streams.
    assert same_append(event(second, 1, 8, 1), event(first, 3, 7, 1))
    # A part: the other streams' events between them are not read.
    assert same_append(event(first, 4, 9, 1), event(first, 3, 7, 1))
    # Another moment, or another stream further on, is another append.
    assert not same_append(event(first, 4, 8, 2), event(first, 3, 7, 1))
    assert not same_append(event(second, 1, 9, 1), event(first, 3, 7, 1))
