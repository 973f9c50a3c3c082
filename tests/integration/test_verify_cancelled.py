"""`audit verify` cancelled (a Ctrl-C) at any point of its replay ends its transaction cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from audit.parts import CURSOR_PREFETCH
from audit.verify import verify
from bench.generate import generate
from tests.conftest import IsolatedDatabase


@pytest.mark.slow
async def test_a_verify_cancelled_at_any_turn_of_its_replay_rolls_back_and_raises_cancelled(
    isolated_db: IsolatedDatabase,
) -> None:
    """The replay asks for the next batch before replaying one; cancelled in the turn it
    yields after asking, that fetch held the connection and the transaction's ROLLBACK failed
    "another operation is in progress" (a Ctrl-C printed that traceback, not "Aborted!").
    Each run here is cancelled one more event-loop turn after the first batch, so some run
    lands in that turn whatever the machine's speed."""
    await generate(isolated_db.url, 4 * CURSOR_PREFETCH)
    outcomes: dict[str, int] = {}
    for turns in range(60):
        replayed = asyncio.Event()
        running = asyncio.ensure_future(verify(isolated_db.pool, _setting(replayed)))
        await replayed.wait()
        for _ in range(turns):
            await asyncio.sleep(0)
        running.cancel()
        try:
            await running
        except asyncio.CancelledError:
            outcomes["cancelled"] = outcomes.get("cancelled", 0) + 1
        else:
            outcomes["finished"] = outcomes.get("finished", 0) + 1
        # Every connection is back in the pool, idle, outside any transaction.
        assert await isolated_db.pool.fetchval("SELECT 1") == 1
    assert outcomes.get("cancelled", 0) >= 10, outcomes


def _setting(event: asyncio.Event) -> Callable[[int], None]:
    """A progress callback that sets ``event`` when a batch has been replayed."""
    return lambda _: event.set()
