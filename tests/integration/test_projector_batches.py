"""The projector looks again at once only after a full batch (projections/runner.py):
a short batch read to the head, and the next commit's NOTIFY wakes it."""

from __future__ import annotations

import asyncio

import pytest

from ledger.bootstrap import build_ledger
from projections import runner
from projections.queries import Views
from projections.runner import Projector, all_projections, catch_up
from tests.conftest import IsolatedDatabase
from tests.support.events import settled
from tests.support.ledger import open_account

BATCH = 10


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, int]]:
    """What each ``apply_batch`` applied per view, in order (the real one runs)."""
    seen: list[dict[str, int]] = []
    real = runner.apply_batch

    async def counted(*args: object, **kwargs: object) -> dict[str, int]:
        applied = await real(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(applied)
        return applied

    monkeypatch.setattr(runner, "apply_batch", counted)
    return seen


async def open_accounts(isolated_db: IsolatedDatabase, count: int) -> list[str]:
    """``count`` accounts opened through the ledger: one event each."""
    ledger = build_ledger(isolated_db.pool)
    account_ids = [f"acct_batches_{n}" for n in range(count)]
    for account_id in account_ids:
        await open_account(ledger, account_id, 100)
    await settled(isolated_db.store)
    return account_ids


@pytest.mark.parametrize(
    ("events", "expected"),
    [(BATCH - 3, [BATCH - 3]), (BATCH, [BATCH, 0]), (2 * BATCH + 5, [BATCH, BATCH, 5])],
)
async def test_catch_up_stops_after_the_first_short_batch(
    isolated_db: IsolatedDatabase,
    batches: list[dict[str, int]],
    events: int,
    expected: list[int],
) -> None:
    await open_accounts(isolated_db, events)

    applied = await catch_up(isolated_db.store, all_projections(), batch_size=BATCH)

    assert applied == events * len(all_projections())
    assert [set(batch.values()) for batch in batches] == [{n} for n in expected]


async def test_the_running_projector_applies_what_commits_after_its_short_batch(
    isolated_db: IsolatedDatabase, batches: list[dict[str, int]]
) -> None:
    """No second look after a short batch: the commits that follow wake it instead."""
    store = isolated_db.store
    stop = asyncio.Event()
    projector = asyncio.create_task(Projector(store, isolated_db.url, batch_size=BATCH).run(stop))
    try:
        ledger = build_ledger(isolated_db.pool)
        for wave in range(3):
            account_ids = [f"acct_wave_{wave}_{n}" for n in range(4)]
            for account_id in account_ids:
                await open_account(ledger, account_id, 100 + wave)
            for _ in range(500):  # the views follow within seconds, woken by NOTIFY
                if await Views(isolated_db.pool).balance(account_ids[-1]) is not None:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError(f"wave {wave} was not applied")
    finally:
        stop.set()
        await projector

    assert sum(sum(batch.values()) for batch in batches) == 12 * len(all_projections())
