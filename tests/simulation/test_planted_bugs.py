"""The simulator finds bugs: each planted one is reported as a violation within a short run."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from stripe_standin import RunningStandin, run_standin
from tests.conftest import IsolatedDatabase
from tests.simulation.plants import PLANTS, plant
from tests.simulation.world import Violation, simulate

BUDGET_STEPS = 300
SEEDS = (9, 1, 2, 3)
"""A planted bug must be found within a few seeds of this budget (the long run has 50 of 1,000)."""


@pytest.fixture(scope="module")
async def standin() -> AsyncIterator[RunningStandin]:
    async with run_standin() as running:
        yield running


@pytest.mark.parametrize("name", sorted(PLANTS))
async def test_a_planted_bug_is_found(
    name: str,
    isolated_db: IsolatedDatabase,
    standin: RunningStandin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plant(name, monkeypatch.setattr)

    found: list[str] = []
    for seed in SEEDS:
        try:
            await simulate(seed, BUDGET_STEPS, isolated_db.pool, standin)
        except Violation as violation:
            found.append(str(violation))
            break

    assert found, f"{name} was not found in {len(SEEDS)} seeds of {BUDGET_STEPS} steps"
    assert "replay exactly this schedule: SIM_SEED=" in found[0]
