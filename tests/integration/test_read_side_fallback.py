"""A read the standby was too slow for falls back to the primary: whether the primary's
views have applied what it waits for is looked at there, not taken from an old look."""

from __future__ import annotations

import pytest

from api import read_side
from api.read_side import ReadSide, ReadsOfRequest
from projections.runner import all_projections
from tests.conftest import IsolatedDatabase, migrated_database


async def test_a_read_the_standby_was_too_slow_for_is_not_behind_on_a_current_primary(
    postgres_server_url: str, isolated_db: IsolatedDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The standby's views never reach position 5; the primary's are there. The standby's
    wait took the read's whole second, and the primary's views were judged behind without a
    look (their last one was from before): a list said ``Ledger-Views-Behind: true``, and a
    balance was read from the write side, about views that had applied it."""
    monkeypatch.setattr(read_side, "READ_WAIT", 0.05)  # the standby's wait ends soon
    await isolated_db.pool.executemany(
        """INSERT INTO projection_positions (name, position) VALUES ($1, 5)
           ON CONFLICT (name) DO UPDATE SET position = 5""",
        [(projection.name,) for projection in all_projections()],
    )
    async with migrated_database(postgres_server_url) as standby:
        reads = ReadSide(isolated_db.pool, standby.pool)
        with ReadsOfRequest() as request:
            answer = await reads.run(lambda source: source.pool.fetchval("SELECT 1"), at_least=5)

    assert answer == 1
    assert request.read_from == "primary"
    assert request.caught_up
    assert not request.behind
