"""``SIM_MIX`` weighs the simulator's steps; without it every seed's schedule is as it was."""

from __future__ import annotations

import pytest

from tests.simulation.world import (
    OFF_BY_DEFAULT,
    STEP_NAMES,
    Step,
    mix_text,
    mixed,
    next_period,
    parse_mix,
)

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


def test_a_step_off_by_default_is_taken_only_when_a_mix_names_it() -> None:
    steps: list[Step] = [
        (0.5, "spend", lambda: None),
        (0.5, "burst", lambda: None),
        (1.01, "refund", lambda: None),
    ]
    assert "burst" in OFF_BY_DEFAULT

    unnamed = mixed(steps, parse_mix("refund=2"))
    assert unnamed[1][0] == unnamed[0][0]  # a chance of nothing: its bound is the spend's
    weighed = mixed(steps, parse_mix("burst=10"))
    assert weighed[1][0] - weighed[0][0] == pytest.approx(0.5 / 1.5)  # 0.05 x 10 of 1.5


def test_the_steps_users_meet_that_the_default_schedule_never_takes_are_named() -> None:
    for name in (
        "burst",
        "long hold",
        "reset ahead",
        "keyed purchase",
        "reused purchase key",
        "default hold",
        "capture too much",
    ):
        assert name in OFF_BY_DEFAULT
        assert name in STEP_NAMES
        assert set(parse_mix(f"{name.replace(' ', '-')}=2")) == {name}


def test_a_reset_ahead_of_the_calendar_names_the_next_period() -> None:
    assert [next_period(p) for p in ("2029-12", "2030-01", "2030-09", "2030-11")] == [
        "2030-01",
        "2030-02",
        "2030-10",
        "2030-12",
    ]


def test_a_violations_replay_line_names_the_mix_as_a_shell_takes_it() -> None:
    """Names with spaces in it ended the variable's value at the first one when pasted."""
    mix = parse_mix("keyed-purchase=8,settle_hold=3")

    assert mix_text(mix) == "keyed-purchase=8,settle-hold=3"
    assert parse_mix(mix_text(mix)) == mix
