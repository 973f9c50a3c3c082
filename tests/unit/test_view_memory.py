"""What the live projector's views remember of their rows (projections/memory.py)."""

from __future__ import annotations

from uuid import uuid4

from projections.memory import ViewMemory


def test_the_memory_drops_the_streams_least_recently_written_beyond_its_limit() -> None:
    first, second, third = uuid4(), uuid4(), uuid4()
    memory: ViewMemory[int] = ViewMemory(limit=2)
    memory.keep({first: 1, second: 2})
    memory.keep({first: 11})  # written again: now the newest
    memory.keep({third: None})  # known to have no row

    known, unknown = memory.recall([first, second, third])

    assert known == {first: 11, third: None}
    assert unknown == [second]
    nothing: ViewMemory[int] = ViewMemory(limit=0)
    nothing.keep({first: 1})
    assert nothing.recall([first]) == ({}, [first])
