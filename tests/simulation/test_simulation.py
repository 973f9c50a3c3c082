"""A short run of the seeded simulator in the suite (``make simulate`` runs the long one)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from stripe_standin import RunningStandin, run_standin
from tests.conftest import IsolatedDatabase
from tests.simulation.world import parse_mix, simulate

STEPS = int(os.environ.get("SIM_STEPS", "150"))
SEEDS = [int(os.environ["SIM_SEED"])] if os.environ.get("SIM_SEED") else [1, 2, 3, 20261125]


@pytest.fixture(scope="module")
async def standin() -> AsyncIterator[RunningStandin]:
    async with run_standin() as running:
        yield running


@pytest.mark.parametrize("seed", SEEDS, ids=lambda seed: f"seed={seed}")
async def test_a_seeded_schedule_of_everything_keeps_the_books_right(
    seed: int, isolated_db: IsolatedDatabase, standin: RunningStandin
) -> None:
    world = await simulate(seed, STEPS, isolated_db.pool, standin)
    print(f"\nseed {seed}: {dict(world.counts)}")


async def test_concurrent_writers_keep_the_books_right(
    isolated_db: IsolatedDatabase, standin: RunningStandin
) -> None:
    """Bursts of spends on one account at once, on both instances (a step the default
    schedule never takes): those taken are what the rules take in the order they
    committed, and the alerts are judged on what each of them left."""
    world = await simulate(9313, STEPS, isolated_db.pool, standin, mix=parse_mix("burst=6"))
    assert world.counts["concurrent spends taken"] > 0
