"""``SIM_MIX`` weighs the simulator's steps; without it every seed's schedule is as it was."""

from __future__ import annotations

import pytest

from tests.simulation.world import STEP_NAMES, Step, mixed, parse_mix

STEPS: list[Step] = [
    (0.25, "spend", lambda: None),
    (0.5, "refund", lambda: None),
    (1.01, "restart the database", lambda: None),
]


def test_no_mix_leaves_the_steps_as_they_are() -> None:
    assert mixed(STEPS, parse_mix("")) is STEPS


def test_a_mix_weighs_each_named_step() -> None:
    weighed = mixed(STEPS, parse_mix("refund=3,restart-the-database=0"))

    bounds = [bound for bound, _, _ in weighed]
    assert bounds[:2] == [pytest.approx(0.25), pytest.approx(1.0)]  # 0.25 : 0.75 : 0
    assert bounds[-1] > 1  # the last step takes whatever roll is left


def test_a_mix_names_only_known_steps() -> None:
    assert set(parse_mix("settle_hold=2,turn-time=4")) <= set(STEP_NAMES)
    with pytest.raises(ValueError, match="not <step>=<factor>"):
        parse_mix("refunds=4")
